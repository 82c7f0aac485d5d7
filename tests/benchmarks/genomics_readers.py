"""Time the per-modality readers of `cmta genomics` on inputs of a real cohort's size.

Synthetic files in the layouts cBioPortal and the GDC ship (values random, sizes those of
a TCGA cohort): a cBioPortal RSEM matrix of 20,000 genes x 400 samples, the same matrix's
values read as text first (how the reader parsed it before: the side-by-side reference),
a 200,000-variant MAF with 64 columns, and N GDC STAR-counts files of 60,660 rows each
through a sample sheet. Prints seconds per reader and the machine's load.

Run from the repository root:
    .venv/bin/python tests/benchmarks/genomics_readers.py [--star-files 50] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cmta_pipeline import genomics as g  # noqa: E402
from cmta_pipeline.genomics import gdc  # noqa: E402
from cmta_pipeline.genomics.tables import numeric_block  # noqa: E402


def write_inputs(d: Path, n_star: int) -> dict:
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(20000)]
    samples = [f"TCGA-AA-{i:04d}-01" for i in range(400)]
    rsem = pd.DataFrame(rng.gamma(2, 100, (20000, 400)).round(3), columns=samples)
    rsem.insert(0, "Entrez_Gene_Id", np.arange(20000))
    rsem.insert(0, "Hugo_Symbol", genes)
    rsem.to_csv(d / "data_mrna_seq_v2_rsem.txt", sep="\t", index=False)
    n = 200_000
    maf = pd.DataFrame({
        "Hugo_Symbol": rng.choice(genes, n), "Entrez_Gene_Id": 0,
        "Variant_Classification": rng.choice(["Missense_Mutation", "Silent", "Intron"], n),
        "Tumor_Sample_Barcode": rng.choice([s + "A-11D-A00X-09" for s in samples], n),
    })
    for i in range(60):
        maf[f"extra_{i}"] = "x"
    with open(d / "merged.maf", "w") as fh:
        fh.write("#version gdc-1.0.0\n")
        maf.to_csv(fh, sep="\t", index=False)
    star_genes = pd.DataFrame({
        "gene_id": [f"ENSG{i:011d}.1" for i in range(60660)],
        "gene_name": [f"G{i}" for i in range(60660)], "gene_type": "protein_coding",
    })
    rows = []
    for k in range(n_star):
        name = f"{k:08d}.rna_seq.augmented_star_gene_counts.tsv"
        counts = rng.poisson(50, 60660)
        tab = star_genes.assign(unstranded=counts, stranded_first=counts // 2, stranded_second=counts // 2,
                                tpm_unstranded=counts / 3.3, fpkm_unstranded=counts / 7.1,
                                fpkm_uq_unstranded=counts / 5.2)
        (d / "star" / f"{k}").mkdir(parents=True)
        with open(d / "star" / f"{k}" / name, "w") as fh:
            fh.write("# gene-model: GENCODE v36\n")
            tab.to_csv(fh, sep="\t", index=False)
        rows.append((f"{k}", name, "Gene Expression Quantification", f"TCGA-AA-{k:04d}-01A"))
    pd.DataFrame(rows, columns=["File ID", "File Name", "Data Type", "Sample ID"]).to_csv(
        d / "sheet.tsv", sep="\t", index=False)
    return {"rsem": d / "data_mrna_seq_v2_rsem.txt", "maf": d / "merged.maf",
            "star": d / "star", "sheet": d / "sheet.tsv"}


def read_as_text(path: Path) -> pd.DataFrame:
    """The reference: every cell read as text, then converted column by column."""
    df = pd.read_csv(path, sep="\t", dtype=str, low_memory=False)
    return numeric_block(df.iloc[:, 2:], str(path), list(df["Hugo_Symbol"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--star-files", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        f = write_inputs(Path(tmp), args.star_files)
        cases = {
            "cBioPortal RSEM 20,000 x 400, values read as text (reference)": lambda: read_as_text(f["rsem"]),
            "cBioPortal RSEM 20,000 x 400, read_gene_matrix": lambda: g.read_gene_matrix(f["rsem"], "rnaseq"),
            "MAF 200,000 variants x 64 columns, read_maf": lambda: g.read_maf(f["maf"]),
            f"GDC STAR counts, {args.star_files} files, read_gdc_folder": lambda: gdc.read_gdc_folder(
                f["star"], "rnaseq", f["sheet"]),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.repeats):  # interleaved, so that load changes hit every case alike
            for name, fn in cases.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    print(f"load average (1 min) before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f}")
    for name, ts in times.items():
        print(f"{name:70s} {min(ts):6.2f} s (best of {len(ts)})")


if __name__ == "__main__":
    main()
