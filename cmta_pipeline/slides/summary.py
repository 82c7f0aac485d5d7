"""Every slide's tiling status in one table (``summary.tsv``) and the slides that failed
(``failed_slides.tsv``), from the ``<slide>.tile.json`` files of ``cmta tile --status``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..errors import CMTAError
from ..fileio import atomic_output, fresh_outputs

COLUMNS = ["slide_id", "case_id", "status", "n_patches", "read_level", "mpp", "upsampled", "reason"]


def summarize(status_files: list[str]) -> pd.DataFrame:
    """One row per status file, with :data:`COLUMNS`."""
    rows = []
    for f in status_files:
        try:
            rows.append(json.loads(Path(f).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise CMTAError(f"{f}: unreadable tiling status ({exc})") from None
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    for col in ("n_patches", "read_level"):
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    return df[COLUMNS]


def write_summary(status_files: list[str], outdir: str | os.PathLike) -> pd.DataFrame:
    """Write ``failed_slides.tsv`` then ``summary.tsv`` under ``outdir``; returns the table."""
    out = Path(outdir)
    with fresh_outputs(out, ("failed_slides.tsv",), marker="summary.tsv"):
        df = summarize(status_files)
        with atomic_output(out / "failed_slides.tsv") as tmp:
            df[df["status"] != "ok"][["slide_id", "case_id", "reason"]].to_csv(tmp, sep="\t", index=False)
        with atomic_output(out / "summary.tsv") as tmp:
            df.to_csv(tmp, sep="\t", index=False)
    return df
