"""Which patients make the cohort: survival, a genomic profile and, when slides are used,
at least one usable slide; every patient left out is listed with the reason."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import CMTAError
from ..ids import check_ids


def read_slides(sheet: str | os.PathLike | None, tiles_summary: str | os.PathLike | None) -> pd.DataFrame | None:
    """Slides and whether each is usable: columns slide_id, case_id, usable, reason.

    ``sheet`` lists the slides (slide_id, case_id); without it the tiling summary
    (slide_id, case_id, status, n_patches, reason) is the list. A slide is usable when
    the summary says ``ok`` with patches (or when there is no summary at all).
    """
    if sheet is None and tiles_summary is None:
        return None
    tables = {}
    for what, path in (("slide sheet", sheet), ("tiling summary", tiles_summary)):
        if path is None:
            continue
        path = Path(path)
        if not path.is_file():
            raise CMTAError(f"{what} not found: {path}")
        df = pd.read_csv(path, sep="\t", dtype=str, comment="#").dropna(how="all")
        need = ["slide_id", "case_id"] + (["status"] if what == "tiling summary" else [])
        miss = [c for c in need if c not in df.columns]
        if miss:
            raise CMTAError(f"{path}: missing column(s) {', '.join(miss)}")
        for c in ("slide_id", "case_id"):
            df[c] = df[c].astype(str).str.strip()
            check_ids(df[c], c, str(path), lines=[int(i) + 2 for i in df.index])  # cmta_pipeline/ids.py
        tables[what] = df
    slides = (tables.get("slide sheet", tables.get("tiling summary")))[["slide_id", "case_id"]].drop_duplicates()
    slides["usable"] = True
    slides["reason"] = ""
    if "tiling summary" in tables:
        summ = tables["tiling summary"].drop_duplicates("slide_id", keep="last").set_index("slide_id")
        status = summ["status"].str.strip().str.lower()
        n_patches = pd.to_numeric(summ.get("n_patches", pd.Series(1, index=summ.index)), errors="coerce").fillna(0)
        ok = (status == "ok") & (n_patches > 0)
        why = summ.get("reason", pd.Series("", index=summ.index)).fillna("").astype(str)
        for i, sid in enumerate(slides["slide_id"]):
            if sid not in summ.index:
                slides.iloc[i, slides.columns.get_loc("usable")] = False
                slides.iloc[i, slides.columns.get_loc("reason")] = "not in the tiling summary"
            elif not ok[sid]:
                slides.iloc[i, slides.columns.get_loc("usable")] = False
                slides.iloc[i, slides.columns.get_loc("reason")] = (
                    f"tiling {status[sid]}" + (f": {why[sid]}" if why[sid] else "")
                    if status[sid] != "ok" else "no patches"
                )
    return slides.reset_index(drop=True)


def assemble_cohort(
    survival: pd.DataFrame, genomic_ids, genomics_dropped: pd.DataFrame, slides: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join survival, genomics and slides: (cohort table, audit table)."""
    audit: list[tuple[str, str, str]] = []
    genomic_ids = set(map(str, genomic_ids))
    gdrop = dict(zip(genomics_dropped["case_id"].astype(str), genomics_dropped["reason"].astype(str)))
    for case, reason in gdrop.items():
        audit.append((case, reason, "genomics stage"))
    kept = [c for c in survival.index if c in genomic_ids]
    for c in survival.index:
        if c not in genomic_ids:
            audit.append((c, "no genomics", "survival but no genomic profile"))
    slide_ids = {c: [] for c in kept}
    if slides is not None:
        by_case = {c: g for c, g in slides.groupby("case_id")}
        keep2 = []
        for c in kept:
            g = by_case.get(c)
            if g is None:
                audit.append((c, "no slides", "patient not in the slide sheet"))
                continue
            ok = g[g["usable"]]
            if ok.empty:
                detail = "; ".join(f"{s}: {r}" for s, r in zip(g["slide_id"], g["reason"]))
                audit.append((c, "failed slides only", detail))
                continue
            slide_ids[c] = sorted(ok["slide_id"])
            keep2.append(c)
        for c in sorted(set(by_case) - set(survival.index) - set(gdrop)):
            audit.append((c, "no genomics", "slides but no genomic profile or survival"))
        kept = keep2
    if not kept:
        raise CMTAError(
            "no patient left after joining genomics, survival and slides "
            f"({len(audit)} dropped: see the reasons in audit.tsv); check that case ids match"
        )
    cohort = survival.loc[kept, ["survival_months", "censorship"]].copy()
    cohort["event"] = 1 - cohort["censorship"]
    cohort["slide_ids"] = [";".join(slide_ids[c]) for c in kept]
    cohort.index.name = "case_id"
    audit_df = pd.DataFrame(audit, columns=["case_id", "reason", "detail"]).drop_duplicates("case_id")
    return cohort, audit_df
