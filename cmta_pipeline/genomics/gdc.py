"""GDC per-sample files, joined through the GDC sample sheet, as gene x sample tables.

The GDC ships RNA-seq and copy number as one file per sample, named by a file UUID;
the sample sheet (``gdc_sample_sheet.<date>.tsv``: File ID, File Name, Data Category,
Data Type, Project ID, Case ID, Sample ID, Sample Type, ...) says which sample each file
belongs to. :func:`read_gdc_folder` reads every file of one kind under a folder (as
``gdc-client`` lays them out, ``<File ID>/<File Name>``, or flat):

* RNA-seq, STAR - Counts (``*.rna_seq.augmented_star_gene_counts.tsv``: a ``#
  gene-model`` line, then gene_id, gene_name, gene_type, unstranded, stranded_first,
  stranded_second, tpm_unstranded, fpkm_unstranded, fpkm_uq_unstranded). One unit column
  is used (TPM by default) and ``log1p`` is applied. The four ``N_*`` summary rows and
  the ``_PAR_Y`` copies of pseudo-autosomal genes are skipped.
* Gene-level copy number (``*.gene_level_copy_number.v36.tsv``: gene_id, gene_name,
  chromosome, start, end, copy_number, min_copy_number, max_copy_number): the absolute
  ``copy_number`` mapped to GISTIC-like levels by :func:`copy_number_to_level`.

Only whole files are read: a STAR file must have its ``# gene-model`` line, the ``N_*``
rows, a last line ending with a newline, and the gene model and gene rows of the other
files of the run (an interrupted download fails one of these). Gene names are matched to
the family symbols after the optional aliases (:func:`.aliases.apply_aliases`). The
patient of each file is the sample sheet's Case ID (:mod:`.gdc_sheet`); the sample ->
patient step is then the same as for every other input (:func:`.samples.samples_to_patients`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from .aliases import apply_aliases
from .gdc_sheet import matched_files
from .samples import SampleMap
from .tables import (
    NA_VALUES,
    examples,
    last_line,
    leading_comment_lines,
    numeric_block,
    open_text,
    read_header,
    read_table,
)

STAR_SUMMARY_ROWS = ("N_unmapped", "N_multimapping", "N_noFeature", "N_ambiguous")
RNASEQ_UNITS = ("tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded", "unstranded",
                "stranded_first", "stranded_second")
_KINDS = {
    # modality: (file-name marker, sample-sheet Data Type)
    "rnaseq": ("star_gene_counts", "Gene Expression Quantification"),
    "cnv": ("gene_level_copy_number", "Gene Level Copy Number"),
}


def copy_number_to_level(cn: np.ndarray) -> np.ndarray:
    """Absolute copy number -> GISTIC-like level, relative to a diploid genome.

    0 -> -2 (homozygous deletion), 1 -> -1 (loss of one copy), 2 -> 0, 3 or 4 -> 1 (gain,
    up to twice the diploid number), 5 or more -> 2 (amplification, more than twice).
    Missing stays missing. No tumour ploidy correction: the GDC gene-level files carry
    none, and GISTIC's thresholded calls in the published tables are also relative to 2.
    """
    cn = np.asarray(cn, dtype=float)
    out = np.select([cn <= 0, cn == 1, cn == 2, cn <= 4], [-2.0, -1.0, 0.0, 1.0], default=2.0)
    return np.where(np.isnan(cn), np.nan, out)


def _read_one(path: Path, modality: str, unit: str) -> tuple[pd.DataFrame, int, str]:
    """One per-sample file as read: columns gene_id, gene_name (text), value (float); the
    file line of data row 0; its gene model (STAR files, checked whole)."""
    col = unit if modality == "rnaseq" else "copy_number"
    if path.stat().st_size == 0:
        raise CMTAError(f"{path}: the file is empty (0 bytes): an interrupted download? download it again")
    header = read_header(path)
    miss = [c for c in ("gene_id", "gene_name", col) if c not in header]
    if miss:
        units = ", ".join(c for c in RNASEQ_UNITS if c in header) or "none present"
        hint = f"; choose another unit with --rnaseq-unit ({units})" if modality == "rnaseq" and col in miss else ""
        raise CMTAError(f"{path}: missing column(s) {', '.join(miss)} (columns: {', '.join(header[:10])}){hint}")
    df = read_table(path, modality, dtype={"gene_id": str, "gene_name": str},
                     usecols=["gene_id", "gene_name", col], na_values=NA_VALUES, keep_default_na=False)
    first = leading_comment_lines(path) + 2
    vals = numeric_block(df[[col]], str(path), [f"line {first + i}" for i in range(len(df))])[col]
    raw = pd.DataFrame({"gene_id": df["gene_id"], "gene_name": df["gene_name"], "value": vals})
    return raw, first, check_star_file(path, raw) if modality == "rnaseq" else ""


def _check_values(path: Path, modality: str, unit: str, one: pd.DataFrame, first: int) -> None:
    """Copy numbers are whole numbers >= 0; expression values are >= 0."""
    vals = one["value"]
    bad = vals.notna() & ((vals < 0) | (vals != np.round(vals))) if modality == "cnv" else vals < 0
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        what = "is not a whole number of copies >= 0" if modality == "cnv" else "is negative"
        col = "copy_number" if modality == "cnv" else unit
        raise CMTAError(
            f"{path}: line {first + int(one.index[i])} (gene {one['gene_name'].iloc[i]}): "
            f"{col} {vals.iloc[i]:g} {what}"
        )


def read_gdc_folder(
    folder: str | os.PathLike, modality: str, sample_sheet: str | os.PathLike | None,
    rnaseq_unit: str = "tpm_unstranded", aliases: dict[str, str] | None = None,
    audit: list | None = None, wanted: set[str] | None = None,
) -> tuple[pd.DataFrame, SampleMap]:
    """Every GDC per-sample file of ``modality`` under ``folder`` as a gene x sample table,
    with the sample sheet's sample map (sample -> Case ID and sample type).

    Files are matched to samples through ``sample_sheet`` (only files it lists are
    used; those it lists but the folder lacks, the reverse, and second files of one
    sample go to the audit: :func:`.gdc_sheet.matched_files`). Every file must be whole
    (:func:`check_star_file`) and have the gene rows of the others (:func:`same_genes`).
    A gene name carried by several gene ids is a gene-symbol collision: an error when the
    name is in ``wanted`` (the family genes), otherwise left out and counted in the
    audit. RNA-seq: ``rnaseq_unit`` column, log1p applied. Copy number:
    :func:`copy_number_to_level`.
    """
    folder = Path(folder)
    if modality not in _KINDS:
        raise CMTAError(f"a folder of GDC per-sample files is read for rnaseq or cnv, not {modality}")
    if modality == "rnaseq" and rnaseq_unit not in RNASEQ_UNITS:
        raise CMTAError(f"rnaseq_unit: {rnaseq_unit!r} is not one of {', '.join(RNASEQ_UNITS)}")
    if sample_sheet is None:
        raise CMTAError(
            f"{folder}: a folder of GDC per-sample files needs the GDC sample sheet "
            "(--gdc-sample-sheet) to know each file's sample"
        )
    marker, data_type = _KINDS[modality]
    sheet, on_disk, sample_map = matched_files(folder, marker, data_type, sample_sheet, modality, audit)
    columns, first_file, layout = {}, None, None
    for name, sample in zip(sheet["file_name"], sheet["sample_id"]):
        path = on_disk[name]
        raw, first, model = _read_one(path, modality, rnaseq_unit)
        if first_file is None:
            first_file = (path, model, raw["gene_id"])
            layout = _gene_layout(path, raw, aliases, audit, wanted)
        else:
            same_genes(first_file, (path, model, raw["gene_id"]))
        _, _, keep, use, index, _ = layout
        _check_values(path, modality, rnaseq_unit, raw[keep], first)
        columns[sample] = pd.Series(raw["value"][use].to_numpy(), index=index)
    values = pd.DataFrame(columns)
    values = np.log1p(values) if modality == "rnaseq" else pd.DataFrame(
        copy_number_to_level(values.to_numpy()), index=values.index, columns=values.columns
    )
    if audit is not None:
        src = str(folder)
        what = f"{rnaseq_unit}, log1p" if modality == "rnaseq" else "copy_number -> -2..2 (0:-2, 1:-1, 2:0, 3-4:1, >=5:2)"
        model = f"gene model {first_file[1]}; " if first_file[1] else ""
        audit.append((src, f"GDC {modality} files read ({what})", len(sheet),
                      f"{model}{len(first_file[2])} rows each, checked whole"))
        if layout[5]:
            audit.append((src, "gene names carried by several gene ids (left out)", len(layout[5]),
                          examples(sorted(layout[5]))))
    return values, sample_map


def check_star_file(path: Path, raw: pd.DataFrame) -> str:
    """The gene model of a STAR - Counts file that its own content says is whole: the
    ``# gene-model:`` first line, the four ``N_*`` rows, and a last line ending with a
    newline (the last row's fields are checked by :func:`.tables.read_table`)."""
    with open_text(path) as fh:
        first = fh.readline().strip()
    cut = "the file is cut off or not a whole GDC STAR - Counts file (an interrupted download?); download it again"
    if not first.startswith("# gene-model:"):
        raise CMTAError(f"{path}: no '# gene-model: ...' first line: {cut}")
    missing = [n for n in STAR_SUMMARY_ROWS if not raw["gene_id"].eq(n).any()]
    if missing:
        raise CMTAError(f"{path}: no {', '.join(missing)} row: {cut}")
    last, ends = last_line(path)
    if not ends:
        raise CMTAError(f"{path}: the last line ({last[:50]!r}) does not end with a newline: {cut}")
    return first.split(":", 1)[1].strip()


def same_genes(ref: tuple[Path, str, pd.Series], other: tuple[Path, str, pd.Series]) -> None:
    """Every file of a run has the gene model and the gene rows of the first one read.
    A file whose rows are the first part of the other's is named as cut off."""
    (p0, m0, g0), (p1, m1, g1) = ref, other
    if m0 != m1:
        raise CMTAError(f"{p1}: gene model {m1!r}, but {p0} has {m0!r}: every file of a run must come from one gene model")
    if len(g0) == len(g1) and g0.to_numpy().tolist() == g1.to_numpy().tolist():
        return
    short, n_short, long, n_long = (p1, len(g1), p0, len(g0)) if len(g1) < len(g0) else (p0, len(g0), p1, len(g1))
    shorter = g1 if short == p1 else g0
    longer = g0 if short == p1 else g1
    if longer[: len(shorter)].to_numpy().tolist() == shorter.to_numpy().tolist():
        raise CMTAError(
            f"{short}: {n_short:,} gene rows where {long} has {n_long:,} (it ends at "
            f"{shorter.iloc[-1]}): the file is cut off (an interrupted download?); download it again"
        )
    i = next(k for k, (a, b) in enumerate(zip(g0, g1)) if a != b) if min(len(g0), len(g1)) else 0
    raise CMTAError(
        f"{p1}: its gene rows differ from those of {p0} ({len(g1):,} vs {len(g0):,} rows; "
        f"row {i + 1}: {g1.iloc[i] if i < len(g1) else '-'} vs {g0.iloc[i] if i < len(g0) else '-'}): "
        "every file of a run must have the same gene set"
    )


def _gene_layout(path: Path, raw: pd.DataFrame, aliases, audit, wanted):
    """The gene rows of a file, worked out once for the files that share them: (gene ids,
    gene names, rows that are genes, rows used, their gene names, colliding names)."""
    gid = raw["gene_id"].fillna("")
    keep = ~gid.str.startswith("N_") & ~gid.str.endswith("_PAR_Y") & raw["gene_name"].notna()
    genes = pd.DataFrame({
        "gene_id": gid[keep].str.split(".").str[0],
        "gene_name": apply_aliases(raw["gene_name"][keep].str.strip(), aliases or {}, str(path), audit),
    })
    many = genes.groupby("gene_name")["gene_id"].nunique()
    clash = set(many.index[many > 1])
    hit = sorted(clash & (wanted or set()))
    if hit:
        ids = genes.loc[genes["gene_name"] == hit[0], "gene_id"].tolist()
        raise CMTAError(
            f"{path}: gene name {hit[0]!r} is carried by several gene ids "
            f"({', '.join(ids)}): gene-symbol collision for a family gene; keep the row of "
            "the gene the family means in the files, or take the gene out of the family file"
        )
    clashing = genes["gene_name"].isin(clash)  # indexed like raw's kept rows
    use = keep.copy()
    use[genes.index[clashing]] = False
    return raw["gene_id"], raw["gene_name"], keep, use, pd.Index(genes["gene_name"][~clashing]), clash
