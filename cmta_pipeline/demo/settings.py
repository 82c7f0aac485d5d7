"""The demo cohort's settings and slide sheet: torch- and OpenCV-free, because Snakemake
reads them when it plans the demo's jobs (workflow/rules/common.smk), before any slide
exists. The cohort itself is drawn by :mod:`.cohort`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd

from ..errors import CMTAError

#: Gene families whose expression carries the genomic score, and the sign of each.
SIGNAL_SIGN = {"Oncogenes": 1.0, "Tumor Suppressor Genes": -1.0}


@dataclass
class DemoSettings:
    """What the demo cohort looks like and how its risk is planted (config key ``demo``)."""

    n_patients: int = 120
    seed: int = 1
    morphology_weight: float = 1.0  # risk per sd of the morphology score
    genomic_weight: float = 1.0  # risk per sd of the genomic score
    time_noise: float = 0.35  # sd of log survival time around -risk
    median_months: float = 30.0  # median survival at risk 0
    censoring_fraction: float = 0.3  # about this fraction censored (uniform censoring times)
    gene_loading: float = 0.6  # signal genes: value = +-loading * score + N(0, 1)
    signal_families: list[str] = field(default_factory=lambda: list(SIGNAL_SIGN))
    mpp: float = 1.0  # slide resolution (10x: small files, patches of 128 um = 128 px)
    slide_um: tuple[float, float] = (1600.0, 1200.0)  # slide width, height
    tissue_mm2: float = 0.45  # tissue area per slide (about 27 patches of 128 um)

    @classmethod
    def from_config(cls, cfg: dict | None) -> "DemoSettings":
        """Settings from the config's ``demo`` section (unknown keys are an error)."""
        cfg = dict(cfg or {})
        for key in ("dir", "families"):  # where the cohort goes and what it reads
            cfg.pop(key, None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise CMTAError(f"demo: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        if "slide_um" in cfg:
            cfg["slide_um"] = tuple(cfg["slide_um"])
        return cls(**cfg)


def case_ids(n_patients: int) -> list[str]:
    return [f"DEMO-{i:04d}" for i in range(1, n_patients + 1)]


def slide_sheet(settings: DemoSettings, cohort_dir: str | os.PathLike) -> pd.DataFrame:
    """The slide sheet of the demo cohort written into ``cohort_dir`` (one slide per patient,
    in ``cohort_dir/slides/``), known before any slide exists so that the workflow can plan
    the slides' jobs: slide_id, case_id, path, mpp, stain."""
    ids = case_ids(settings.n_patients)
    return pd.DataFrame({
        "slide_id": [f"{c}-DX1" for c in ids],
        "case_id": ids,
        "path": [str(Path(cohort_dir) / "slides" / f"{c}-DX1.tif") for c in ids],
        "mpp": settings.mpp,
        "stain": "brightfield",
    })
