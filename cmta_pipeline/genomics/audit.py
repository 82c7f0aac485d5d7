"""Audit rows (source, item, count, detail) that the readers add to ``audit.tsv``: the
patients dropped per reason and the genes of each family found per modality."""

from __future__ import annotations

import pandas as pd

from .data import MODALITIES
from .tables import examples


def dropped_audit(source: str, dropped: pd.DataFrame) -> list[tuple[str, str, int, str]]:
    """One audit row per drop reason (its patients as the detail)."""
    rows = []
    kind = dropped["reason"].astype(str).str.split(" (", n=1, regex=False).str[0]
    for reason, g in dropped.groupby(kind, sort=True):
        detail = examples([f"{c} ({r})" if r != reason else c for c, r in zip(g["case_id"], g["reason"])])
        rows.append((source, f"patients dropped: {reason}", len(g), detail))
    return rows


def family_audit(families: dict[str, list[str]], columns) -> list[tuple[str, str, int, str]]:
    """Audit rows per family: genes found per modality, and genes in no modality of
    the data (with their names)."""
    present = set(map(str, columns))
    mods = [m for m in MODALITIES if any(c.endswith("_" + m) for c in present)]
    rows = []
    for name, genes in families.items():
        src = f"family {name} ({len(genes)} genes)"
        for m in mods:
            rows.append((src, f"genes with {m}", sum(f"{g}_{m}" in present for g in genes), ""))
        absent = [g for g in genes if not any(f"{g}_{m}" in present for m in MODALITIES)]
        rows.append((src, "genes missing from the data", len(absent), examples(absent, 30)))
    return rows
