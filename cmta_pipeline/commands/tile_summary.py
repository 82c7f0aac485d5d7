"""``cmta tile-summary``: one table of every slide's tiling status, and the failed ones."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..errors import CMTAError
from ..fileio import atomic_output

HELP = "collect per-slide tiling status files into summary.tsv and failed_slides.tsv"

COLUMNS = ["slide_id", "case_id", "status", "n_patches", "read_level", "mpp", "upsampled", "reason"]


def add_arguments(p) -> None:
    p.add_argument("status", nargs="*", help="<slide_id>.tile.json files written by cmta tile --status")
    p.add_argument("-o", "--outdir", required=True, help="folder for summary.tsv and failed_slides.tsv")


def summarize(status_files: list[str]) -> pd.DataFrame:
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


def run(args) -> int:
    df = summarize(args.status)
    out = Path(args.outdir)
    with atomic_output(out / "failed_slides.tsv") as tmp:
        df[df["status"] != "ok"][["slide_id", "case_id", "reason"]].to_csv(tmp, sep="\t", index=False)
    with atomic_output(out / "summary.tsv") as tmp:
        df.to_csv(tmp, sep="\t", index=False)
    n_ok = int((df["status"] == "ok").sum())
    print(f"{n_ok} of {len(df)} slides tiled; {len(df) - n_ok} failed (see {out / 'failed_slides.tsv'})")
    return 0
