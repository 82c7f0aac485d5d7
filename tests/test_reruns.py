"""What reruns after a finished extraction (issue 20; config/README.md lists every key):
settings that change only speed or placement rerun nothing, settings that change results
rerun what they affect, `--forcerun extract` works with slides_per_job > 1, and a slide
added to the sheet reruns its own batch, not every later one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from cmta_pipeline.slides.synthetic import demo_specimen, write_synthetic_slide

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
OLD = ["TCGA-AA-0001-01Z-00-DX1", "TCGA-AA-0007-01Z-00-DX1", "TCGA-AA-0008-01Z-00-DX1"]
NEW = "TCGA-AA-0003-01Z-00-DX1"


def snakemake(wd: Path, *args: str, config: dict | None = None):
    extra = []
    if config is not None:
        (wd / "override.yaml").write_text(yaml.safe_dump(config))
        extra = ["--configfile", str(wd / "override.yaml")]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--cores", "2", *extra, *args]
    return subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=900)


def jobs(output: str) -> list[tuple[str, str]]:
    """(rule, wildcards or output) of each job a run plans or runs; empty wildcards (the
    first encoder's {geometry} and {encoder_dir}) left out."""
    found = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", output):
        m = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        if m:
            w = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            w = ", ".join(kv for kv in w.group(1).split(", ") if not kv.endswith("=")) if w else ""
            o = re.search(r"^\s+output: (.*)$", block, re.M)
            found.append((m.group(1), w or (o.group(1) if o else "")))
    return found


def slide(folder: Path, name: str, seed: int) -> None:
    shapes, w, h = demo_specimen()
    folder.mkdir(exist_ok=True)
    write_synthetic_slide(folder / f"{name}.tif", shapes[:1], w, h, 0.5, seed=seed)


@pytest.mark.slow
def test_speed_settings_rerun_nothing_and_result_settings_rerun_what_they_change(tmp_path):
    for i, name in enumerate(OLD):
        slide(tmp_path / "slides", name, i)
    base = {"outdir": "results", "slides": {"folder": "slides"}, "tiling": {"preset": "biopsy"},
            "features": {"weights": "random", "input_px": 32, "workers": 0, "threads": 1}}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(base))
    r = snakemake(tmp_path, "features")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(w for rule, w in jobs(r.stderr) if rule == "encode") == [f"slide={s}" for s in OLD]

    def plan(**changes):
        features = {**base["features"], **changes.pop("features", {})}
        r = snakemake(tmp_path, "-n", "features", config={**base, **changes, "features": features})
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout + r.stderr

    speed = [
        {"features": {"batch_size": 7}}, {"features": {"workers": 1}}, {"features": {"threads": 2}},
        {"features": {"gpu_threads": 3}}, {"features": {"device": "cpu"}},
        {"features": {"compile": "on", "compile_min_patches": 1, "compile_cache": "elsewhere"}},
        {"features": {"slides_per_job": 2}}, {"features": {"slides_per_job": 3}},
        {"gpu": True}, {"gpu": False},
    ]
    for change in speed:
        out = plan(**change)
        assert "Nothing to be done" in out, (change, out[-3000:])
    # the slide folder moved: the same files, elsewhere
    (tmp_path / "slides").rename(tmp_path / "moved")
    assert "Nothing to be done" in plan(slides={"folder": "moved"})
    (tmp_path / "moved").rename(tmp_path / "slides")

    # result settings rerun what they change, and nothing before it
    out = plan(features={"input_px": 48})
    assert "Params have changed since last execution" in out and "--input-px 48" in out
    assert {rule for rule, _ in jobs(out)} == {"encode", "extract", "features"}, jobs(out)
    # another encoder of the same geometry (UNI: 128 um at 224 px) shares the tiles: only
    # its features are made, beside resnet50's
    out = plan(features={"encoder": "uni_v1"})
    assert {rule for rule, _ in jobs(out)} == {"encode", "extract", "features"}, jobs(out)
    assert "features/uni_v1/" in out and "tiles_" not in out
    out = plan(tiling={"preset": "biopsy", "step_fraction": 0.5})
    assert {rule for rule, _ in jobs(out)} == {"tile", "tile_summary", "features"}, jobs(out)
    # another file under a slide's name is tiled again (its size and time are recorded)
    slide(tmp_path / "slides", OLD[0], seed=9)
    out = plan()
    assert [w for rule, w in jobs(out) if rule == "tile"] == [f"slide={OLD[0]}"], jobs(out)
    assert "Params have changed" in out
    slide(tmp_path / "slides", OLD[0], seed=0)  # back: the same bytes, a newer time
    r = snakemake(tmp_path, "features")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [w for rule, w in jobs(r.stderr) if rule == "extract"] == [f"slide={OLD[0]}"]

    # --forcerun extract with several slides per job: every batch's encoder job
    out = plan(features={"slides_per_job": 2})
    assert "Nothing to be done" in out
    r = snakemake(tmp_path, "-n", "features", "--forcerun", "extract",
                  config={**base, "features": {**base["features"], "slides_per_job": 2}})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    planned = jobs(out)
    assert {rule for rule, _ in planned if rule.startswith("encode_batch_")} == {"encode_batch_0", "encode_batch_1"}
    assert sorted(w for rule, w in planned if rule == "extract") == [f"slide={s}" for s in OLD]


@pytest.mark.slow
def test_a_slide_added_reruns_its_own_batch_only(tmp_path):
    """slides_per_job 2: a slide is added to the folder. Its batch (a consistent hash of the
    slide id) is encoded again; the other batch is not touched."""
    for i, name in enumerate(OLD):
        slide(tmp_path / "slides", name, i)
    config = {"outdir": "results", "slides": {"folder": "slides"}, "tiling": {"preset": "biopsy"},
              "features": {"weights": "random", "input_px": 32, "workers": 0, "threads": 1,
                           "slides_per_job": 2}}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    r = snakemake(tmp_path, "features")
    assert r.returncode == 0, r.stderr[-3000:]
    features = tmp_path / "results" / "features"
    before = {s: (features / f"{s}.features.h5").stat().st_mtime_ns for s in OLD}
    slide(tmp_path / "slides", NEW, 5)
    r = snakemake(tmp_path, "features")
    assert r.returncode == 0, r.stderr[-3000:]
    ran = jobs(r.stderr)
    batches = [w for rule, w in ran if rule.startswith("encode_batch_")]
    assert len(batches) == 1 and NEW in batches[0], ran
    published = sorted(w.removeprefix("slide=") for rule, w in ran if rule == "extract")
    assert published == sorted(s for s in OLD + [NEW] if s in batches[0])
    # with this hash, the new slide shares its batch with 0001; 0007 and 0008 are untouched
    assert published == [OLD[0], NEW]
    for s in OLD[1:]:
        assert (features / f"{s}.features.h5").stat().st_mtime_ns == before[s]


@pytest.mark.slow
def test_tiling_in_batches_is_a_speed_setting(tmp_path):
    """tiling.slides_per_job 2 (issue 29): tile_batch_<k> jobs tile the slides, a local tile
    job per slide moves them into place; a slide that is not one fails alone (on_error:
    skip); the files are those of one `cmta tile` per slide; another batch size reruns
    nothing, a result setting reruns the tiling (the negative control)."""
    for i, name in enumerate(OLD):
        slide(tmp_path / "slides", name, i)
    (tmp_path / "slides" / f"{NEW}.tif").write_bytes(b"not a slide")
    base = {"outdir": "results", "slides": {"folder": "slides", "on_error": "skip"},
            "tiling": {"preset": "biopsy", "slides_per_job": 2}}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(base))
    r = snakemake(tmp_path, "results/tiles/summary.tsv")
    assert r.returncode == 0, r.stderr[-3000:]
    ran = jobs(r.stderr)
    assert sorted(rule for rule, _ in ran if rule.startswith("tile_batch_")) == ["tile_batch_0", "tile_batch_1"]
    assert sorted(w for rule, w in ran if rule == "tile") == [f"slide={s}" for s in sorted(OLD + [NEW])]
    tiles = tmp_path / "results" / "tiles"
    assert not (tiles / ".staged").exists()
    summary = (tiles / "summary.tsv").read_text()
    assert f"{NEW}\tTCGA-AA-0003\tfailed" in summary and summary.count("\tok\t") == 3, summary

    # the same files as one process per slide: the status names the slide's own folder
    s = OLD[0]
    status = json.loads((tiles / f"{s}.tile.json").read_text())
    assert status["coords_path"] == f"results/tiles/{s}/{s}.coords.h5"
    single = tmp_path / "single"
    settings = json.dumps({"preset": "biopsy", "patch_size_px": 512, "target_mpp": 0.25,
                           "encoder_input_px": 224, "step_fraction": 1.0, "stain": "brightfield"})
    subprocess.run([sys.executable, "-m", "cmta_pipeline", "tile", str(tmp_path / "slides" / f"{s}.tif"),
                    "-o", str(single), "--slide-id", s, "--case-id", "TCGA-AA-0001", "--stain",
                    "brightfield", "--settings", settings], check=True, capture_output=True)
    for suffix in (".qc.png", ".qc.jpg", ".qc.json"):
        assert (single / f"{s}{suffix}").read_bytes() == (tiles / s / f"{s}{suffix}").read_bytes()
    with h5py.File(single / f"{s}.coords.h5") as a, h5py.File(tiles / s / f"{s}.coords.h5") as b:
        assert np.array_equal(a["coords"][:], b["coords"][:])
        assert {k: str(v) for k, v in a["coords"].attrs.items()} == {k: str(v) for k, v in b["coords"].attrs.items()}

    def plan(tiling):
        r = snakemake(tmp_path, "-n", "results/tiles/summary.tsv", config={**base, "tiling": tiling})
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout + r.stderr

    assert "Nothing to be done" in plan({"preset": "biopsy", "slides_per_job": 3})
    out = plan({"preset": "biopsy", "slides_per_job": 3, "step_fraction": 0.5})
    assert {rule for rule, _ in jobs(out)} == {"tile_batch_0", "tile_batch_1", "tile", "tile_summary"}, jobs(out)
