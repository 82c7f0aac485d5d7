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

Gene names are matched to the family symbols after the optional aliases
(:func:`.aliases.apply_aliases`). The sample -> patient step is the same as for every other
input (:func:`.samples.samples_to_patients`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from .aliases import apply_aliases
from .samples import patient_of_sample
from .tables import NA_VALUES, examples, leading_comment_lines, numeric_block, read_header, read_table

SHEET_COLUMNS = ("File Name", "Sample ID")
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


def read_sample_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """The GDC sample sheet: columns file_name, sample_id (the tumour sample of each file;
    a paired file lists "tumour, normal"), and the sheet's other columns."""
    path = Path(path)
    df = read_table(path, "GDC sample sheet", dtype=str)
    miss = [c for c in SHEET_COLUMNS if c not in df.columns]
    if miss:
        raise CMTAError(
            f"{path}: missing column(s) {', '.join(miss)} (the GDC sample sheet has File ID, "
            "File Name, Data Category, Data Type, Project ID, Case ID, Sample ID, Sample Type)"
        )
    dup = df["File Name"].duplicated()
    if dup.any():
        line = int(np.flatnonzero(dup)[0]) + 2
        raise CMTAError(f"{path}: line {line}: file {df['File Name'][dup].iloc[0]} is listed twice")
    tumour = []
    for i, ids in enumerate(df["Sample ID"].fillna("")):
        cands = [s.strip() for s in ids.split(",") if s.strip()]
        t = [s for s in cands if patient_of_sample(s)[1] < 10]
        if len(t) > 1:
            raise CMTAError(f"{path}: line {i + 2}: file {df['File Name'].iloc[i]} has several tumour samples ({ids})")
        tumour.append(t[0] if t else (cands[0] if cands else ""))
    df["file_name"] = df["File Name"].str.strip()
    df["sample_id"] = tumour
    return df


def _read_one(path: Path, modality: str, unit: str) -> tuple[pd.DataFrame, int]:
    """One per-sample file as read: columns gene_id, gene_name (text), value (float);
    and the file line of data row 0."""
    col = unit if modality == "rnaseq" else "copy_number"
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
    return pd.DataFrame({"gene_id": df["gene_id"], "gene_name": df["gene_name"], "value": vals}), first


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
) -> pd.DataFrame:
    """Every GDC per-sample file of ``modality`` under ``folder`` as a gene x sample table.

    Files are matched to samples through ``sample_sheet`` (only files it lists are
    used; those it lists but the folder lacks, and the reverse, go to the audit). Two
    files of one sample are an error. A gene name carried by several gene ids is a
    gene-symbol collision: an error when the name is in ``wanted`` (the family genes),
    otherwise left out and counted in the audit. RNA-seq: ``rnaseq_unit`` column,
    log1p applied. Copy number: :func:`copy_number_to_level`.
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
    sheet, on_disk, absent, unlisted = matched_files(folder, modality, sample_sheet)
    columns = {}
    collisions: set[str] = set()
    layout = None  # the gene rows of the previous file, processed once: files share them
    for name, sample in zip(sheet["file_name"], sheet["sample_id"]):
        path = on_disk[name]
        raw, first = _read_one(path, modality, rnaseq_unit)
        if layout is None or not (raw["gene_id"].equals(layout[0]) and raw["gene_name"].equals(layout[1])):
            layout = _gene_layout(path, raw, aliases, audit if layout is None else None, wanted)
            collisions |= layout[5]
        _, _, keep, use, index, _ = layout
        _check_values(path, modality, rnaseq_unit, raw[keep], first)
        columns[sample] = pd.Series(raw["value"][use].to_numpy(), index=index)
    values = pd.DataFrame(columns)
    values = values.loc[[g for g in values.index if g not in collisions]]  # clashes of any file
    values = np.log1p(values) if modality == "rnaseq" else pd.DataFrame(
        copy_number_to_level(values.to_numpy()), index=values.index, columns=values.columns
    )
    if audit is not None:
        src = str(folder)
        what = f"{rnaseq_unit}, log1p" if modality == "rnaseq" else "copy_number -> -2..2 (0:-2, 1:-1, 2:0, 3-4:1, >=5:2)"
        audit.append((src, f"GDC {modality} files read ({what})", len(sheet), ""))
        if absent:
            audit.append((src, "files in the sample sheet but not in the folder", len(absent), examples(absent)))
        if unlisted:
            audit.append((src, "files not in the sample sheet (not used)", len(unlisted), examples(unlisted)))
        if collisions:
            audit.append((src, "gene names carried by several gene ids (left out)", len(collisions),
                          examples(sorted(collisions))))
    return values


def matched_files(
    folder: Path, modality: str, sample_sheet: str | os.PathLike
) -> tuple[pd.DataFrame, dict[str, Path], list[str], list[str]]:
    """(sample-sheet rows of the files of ``modality`` found under ``folder``, file name
    -> path, names listed but absent, names present but unlisted). One file per sample."""
    marker, data_type = _KINDS[modality]
    sheet = read_sample_sheet(sample_sheet)
    of_kind = sheet["file_name"].str.contains(marker, regex=False)
    if "Data Type" in sheet.columns:
        of_kind |= sheet["Data Type"].eq(data_type)
    sheet = sheet[of_kind]
    on_disk = {p.name: p for p in folder.rglob("*") if p.is_file() and marker in p.name}
    listed = set(sheet["file_name"])
    absent = sorted(listed - set(on_disk))
    unlisted = sorted(set(on_disk) - listed)
    sheet = sheet[sheet["file_name"].isin(set(on_disk))]
    if sheet.empty:
        raise CMTAError(
            f"{folder}: none of its {len(on_disk)} *{marker}* files is listed in the sample sheet "
            f"{sample_sheet} (match by File Name)"
        )
    dup = sheet["sample_id"].duplicated(keep=False)
    if dup.any():
        s = sheet.loc[dup, "sample_id"].iloc[0]
        files = sheet.loc[sheet["sample_id"] == s, "file_name"].tolist()
        raise CMTAError(
            f"{sample_sheet}: sample {s} has several {modality} files ({', '.join(files)}): "
            "duplicate samples; keep one file per sample in the folder or the sheet"
        )
    return sheet, on_disk, absent, unlisted


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
