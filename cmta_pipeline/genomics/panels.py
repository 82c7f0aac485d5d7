"""Who was profiled, and for which genes: cBioPortal's case lists, gene panel matrix and
gene panel files (https://docs.cbioportal.org/file-formats/: "Case lists", "Gene panel
matrix file", "Gene panel file").

A MAF cannot list a sample that was sequenced and had no mutation: the study's
``case_lists/cases_sequenced.txt`` (stable id ``<study>_sequenced``) says who was
sequenced, and such samples are all-zero, not missing. A sample sequenced on a targeted
panel (MSK-IMPACT341/410/468/505) was not tested for genes off the panel: those are
missing (NaN), not zero, for mutations and copy number alike. The panel of each sample is
in ``data_gene_panel_matrix.txt`` (one column per profile, named by its stable id:
``mutations``, ``cna``/``gistic``; ``NA`` = not on a panel: whole exome, every gene), the
genes of each panel in a gene panel file (``stable_id: <panel>``, ``gene_list: ...``),
found in the study folder or in ``--gene-panels``. A panel without a gene list cannot be
applied: the audit says so and the values are used as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from .tables import NA_VALUES, examples, read_table


def read_meta(path: Path) -> dict[str, str]:
    """A cBioPortal ``key: value`` file (meta files, case lists, gene panel files); a line
    without a colon (a wrapped description) is passed over."""
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in out:
            out[key.strip()] = value.strip()
    return out


def read_case_list(path: Path) -> tuple[str, list[str]]:
    """(stable_id, sample ids) of a case list file (``case_list_ids`` tab-separated)."""
    meta = read_meta(path)
    if "case_list_ids" not in meta:
        raise CMTAError(f"{path}: no case_list_ids line (a cBioPortal case list)")
    ids = [s.strip() for s in meta["case_list_ids"].replace(",", "\t").split("\t") if s.strip()]
    return meta.get("stable_id", path.stem), ids


def read_panel_genes(folders) -> dict[str, set[str]]:
    """Panel id -> genes, from every ``data_gene_panel*.txt`` (or ``gene_panel*.txt``)
    file with a ``stable_id`` and a ``gene_list`` in ``folders``."""
    out: dict[str, set[str]] = {}
    for folder in folders:
        if folder is None:
            continue
        folder = Path(folder)
        if not folder.is_dir():
            raise CMTAError(f"gene panel folder not found: {folder}")
        for path in sorted(folder.glob("*gene_panel*.txt")):
            if "matrix" in path.name:
                continue
            meta = read_meta(path)
            if "stable_id" in meta and "gene_list" in meta:
                out[meta["stable_id"]] = {g for g in meta["gene_list"].split("\t") if g.strip()}
    return out


@dataclass
class Profiled:
    """Which samples one profile (mutations or copy number) covers, and which genes.

    ``samples``: the samples profiled (None: unknown, only those with data count);
    ``panel_of``: sample -> panel id (absent or None: every gene); ``panel_genes``:
    panel id -> genes (a panel absent from it cannot be applied)."""

    samples: set[str] | None = None
    panel_of: dict[str, str | None] = field(default_factory=dict)
    panel_genes: dict[str, set[str]] = field(default_factory=dict)
    source: str = ""

    def genes_of(self, sample: str) -> set[str] | None:
        """The genes ``sample`` was tested for; None = every gene (or unknown panel)."""
        panel = self.panel_of.get(sample)
        return None if panel is None else self.panel_genes.get(panel)

    def mask(self, values: pd.DataFrame, audit: list | None = None, source: str = "") -> pd.DataFrame:
        """Gene x sample ``values`` with the genes off each sample's panel set missing."""
        out = values.copy()
        n_cells, undefined = 0, set()
        for sample in out.columns:
            panel = self.panel_of.get(sample)
            genes = self.genes_of(sample)
            if panel is not None and genes is None:
                undefined.add(panel)
            if genes is None:
                continue
            off = ~out.index.isin(list(genes))
            n_cells += int(out.loc[off, sample].notna().sum())
            out.loc[off, sample] = np.nan
        if audit is not None:
            self.audit_rows(audit, source, n_cells, undefined)
        return out

    def audit_rows(self, audit: list, source: str, n_cells: int, undefined: set[str]) -> None:
        if n_cells:
            audit.append((source, "values set missing: gene not on the sample's gene panel", n_cells,
                          f"panels from {self.source}"))
        if undefined:
            audit.append((
                source, "gene panels without a gene list (not applied: genes off the panel "
                "keep the value given)", len(undefined),
                f"{examples(sorted(undefined))}; put data_gene_panel_<panel>.txt files in the "
                "study folder or give --gene-panels DIR",
            ))


def read_panel_matrix(path: Path | None, profile_ids) -> dict[str, str | None]:
    """Sample -> panel id of the first column of ``profile_ids`` that the gene panel
    matrix has (``NA`` -> None: every gene)."""
    if path is None:
        return {}
    df = read_table(path, "gene panel matrix", dtype=str, na_values=NA_VALUES, keep_default_na=False)
    if "SAMPLE_ID" not in df.columns:
        raise CMTAError(f"{path}: no SAMPLE_ID column (a cBioPortal gene panel matrix)")
    col = next((c for c in profile_ids if c in df.columns), None)
    if col is None:
        return {}
    return {s.strip(): (None if pd.isna(p) else p.strip()) for s, p in zip(df["SAMPLE_ID"], df[col])}


def panel_from_sample_table(path: Path | None) -> dict[str, str | None]:
    """Sample -> panel id from the GENE_PANEL column some studies put in their sample
    table (used when there is no gene panel matrix)."""
    if path is None:
        return {}
    df = read_table(path, "sample", dtype=str, na_values=NA_VALUES, keep_default_na=False)
    if not {"SAMPLE_ID", "GENE_PANEL"} <= set(df.columns):
        return {}
    return {s.strip(): (None if pd.isna(p) else p.strip()) for s, p in zip(df["SAMPLE_ID"], df["GENE_PANEL"])}

