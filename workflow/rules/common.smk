# What every rule needs: config and sheet validation, the slide table, the `cmta` call.
import os
import sys
from pathlib import Path

from snakemake.utils import validate

REPO_ROOT = Path(workflow.basedir).parent

# Rules call `python -m cmta_pipeline` (the `cmta` command line). Put this checkout on the
# module path so it works inside the conda envs of envs/ too, and, without --use-conda,
# prefer the interpreter that runs Snakemake (a venv need not be activated).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
)
os.environ["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), os.environ["PATH"]))
sys.path.insert(0, str(REPO_ROOT))

from cmta_pipeline.slides import load_slide_table  # noqa: E402

CMTA = "python -m cmta_pipeline"

validate(config, schema="../schemas/config.schema.yaml")

OUT = config["outdir"].rstrip("/")

SLIDES = load_slide_table(
    sheet=config["slides"].get("sheet"),
    folder=config["slides"].get("folder"),
    recursive=config["slides"].get("recursive", False),
    base_dir=os.getcwd(),
)
validate(SLIDES, schema="../schemas/slides.schema.yaml")
SLIDES = SLIDES.set_index("slide_id", drop=False)


wildcard_constraints:
    slide="|".join(map(str, SLIDES.index)) if len(SLIDES) else "NO_SLIDES",


def env_file(name):
    return str(REPO_ROOT / "envs" / f"{name}.yaml")


def final_targets():
    targets = [f"{OUT}/tiles/summary.tsv"]
    return targets
