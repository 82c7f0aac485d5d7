"""Gene-name aliases: the data's gene names mapped to the family file's symbols."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import CMTAError
from .tables import examples, read_table


def read_aliases(path: str | os.PathLike | None) -> dict[str, str]:
    """Gene-name aliases: a two-column table (``alias``, ``symbol``), tab- or comma-separated.

    The data's gene names are mapped to the family file's symbols with it (e.g. a
    GENCODE name renamed since MCAT's ``signatures.csv``)."""
    if path is None:
        return {}
    path = Path(path)
    df = read_table(path, "gene alias", dtype=str)
    miss = [c for c in ("alias", "symbol") if c not in df.columns]
    if miss:
        raise CMTAError(f"{path}: missing column(s) {', '.join(miss)} (layout: alias, symbol)")
    df = df.dropna(subset=["alias", "symbol"])
    dup = df["alias"].duplicated(keep=False) & ~df.duplicated(["alias", "symbol"], keep=False)
    if dup.any():
        a = df.loc[dup, "alias"].iloc[0]
        targets = ", ".join(df.loc[df["alias"] == a, "symbol"])
        raise CMTAError(f"{path}: alias {a!r} maps to several symbols ({targets})")
    return dict(zip(df["alias"].str.strip(), df["symbol"].str.strip()))


def apply_aliases(
    genes: pd.Series, aliases: dict[str, str], source: str, audit: list | None = None
) -> pd.Series:
    """``genes`` with aliases replaced by their symbols. An alias whose symbol the file
    also carries is a gene-symbol collision: an error naming both."""
    if not aliases:
        return genes
    present = set(genes)
    hit = sorted(g for g in present if g in aliases and aliases[g] != g)
    for g in hit:
        if aliases[g] in present:
            raise CMTAError(
                f"{source}: gene {g!r} is an alias of {aliases[g]!r}, which the file also has "
                "(gene-symbol collision): remove the alias or one of the two rows"
            )
    targets = pd.Series([aliases[g] for g in hit])
    clash = targets[targets.duplicated()]
    if len(clash):
        names = [g for g in hit if aliases[g] == clash.iloc[0]]
        raise CMTAError(
            f"{source}: genes {', '.join(map(repr, names))} are all aliases of {clash.iloc[0]!r} "
            "(gene-symbol collision): keep one alias"
        )
    if hit and audit is not None:
        audit.append((source, "gene aliases applied", len(hit), examples([f"{g}->{aliases[g]}" for g in hit], 20)))
    return genes.map(lambda g: aliases.get(g, g))
