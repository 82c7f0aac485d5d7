"""Genomics stage: family expansion, the wide table, per-modality files, bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmta_pipeline import genomics as g
from cmta_pipeline.cli import main
from cmta_pipeline.errors import CMTAError

BLCA_SIZES = [94, 334, 521, 468, 1496, 479]


@pytest.fixture(scope="session")
def blca_genomics(tcga_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("blca") / "genomics"
    rc = main([
        "genomics", str(tcga_dir / "tcga_blca_all_clean.csv.gz"),
        "--families", str(tcga_dir / "signatures.csv"), "-o", str(out),
    ])
    assert rc == 0
    return out


def test_blca_family_sizes_and_outputs(blca_genomics, tcga_dir):
    fam = pd.read_csv(blca_genomics / "families.tsv", sep="\t")
    assert fam["n_features"].tolist() == BLCA_SIZES
    sig_cols = pd.read_csv(tcga_dir / "signatures.csv", nrows=0).columns.tolist()
    assert fam["family"].tolist() == sig_cols
    patients = pd.read_csv(blca_genomics / "patients.tsv", sep="\t")
    assert patients.columns[0] == "case_id"
    assert len(patients) == 373 and patients["case_id"].is_unique
    feats = pd.read_csv(blca_genomics / "features.tsv", sep="\t")
    assert feats.groupby("family", sort=False).size().tolist() == BLCA_SIZES
    assert (feats["gene"] + "_" + feats["modality"] == feats["feature"]).all()
    assert set(feats["modality"]) == {"rnaseq", "cnv"}
    # the genes of each family are the family file's genes
    sig = g.read_families(tcga_dir / "signatures.csv")
    for name, genes in sig.items():
        assert set(feats.loc[feats["family"] == name, "gene"]) <= set(genes)
    # values are the table's, one row per patient
    matrix = pd.read_csv(blca_genomics / "matrix.tsv.gz", sep="\t", index_col="case_id")
    raw = pd.read_csv(tcga_dir / "tcga_blca_all_clean.csv.gz", usecols=["case_id", "TP53_rnaseq", "AHR_cnv"])
    first = raw.drop_duplicates("case_id").set_index("case_id")
    np.testing.assert_allclose(matrix.loc[first.index, "TP53_rnaseq"], first["TP53_rnaseq"], rtol=1e-5)
    np.testing.assert_array_equal(matrix.loc[first.index, "AHR_cnv"], first["AHR_cnv"])


def test_ucec_unsuffixed_columns_declared_as_mutations(tcga_dir):
    fam = g.read_families(tcga_dir / "signatures.csv")
    table = tcga_dir / "tcga_ucec_all_clean.csv.gz"
    with pytest.raises(CMTAError, match="--unsuffixed"):
        g.load_wide_table(table)
    data = g.load_wide_table(table, unsuffixed="mut")
    assert len(data.matrix) == 480
    expanded = g.expand_families(fam, data.matrix.columns)
    for name, feats in expanded.items():
        mods = {f.rsplit("_", 1)[1] for f in feats}
        assert {"cnv", "mut"} <= mods, name
    mut = data.matrix[[c for c in data.matrix.columns if c.endswith("_mut")]]
    assert set(np.unique(mut.to_numpy())) <= {0.0, 1.0}
    # counting only suffixed columns gives the documented sizes
    suffixed = [c for c in data.matrix.columns if not c.endswith("_mut")]
    assert [len(v) for v in g.expand_families(fam, suffixed).values()] == [3, 24, 21, 22, 65, 15]


# ---------------------------------------------------------------- per-modality inputs


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def modality_files(tmp_path):
    # Patient 1 has a normal sample (11) besides its tumour; patient 2 a primary (01) and a
    # metastasis (06): the primary must be chosen. Patient 4 has normal tissue only.
    rna = _write(tmp_path / "data_mrna.txt",
        "Hugo_Symbol\tEntrez_Gene_Id\tTCGA-AA-0001-01\tTCGA-AA-0001-11\tTCGA-AA-0002-06\tTCGA-AA-0002-01\tTCGA-AA-0003-01\tTCGA-AA-0004-11\n"
        "TP53\t7157\t1.0\t99\t98\t2.0\t3.0\t5\n"
        "KRAS\t3845\t4.0\t99\t98\t5.0\tNA\t5\n"
        "KRAS\t3845\t6.0\t99\t98\t7.0\t8.0\t5\n")
    cna = _write(tmp_path / "data_cna.txt",
        "Hugo_Symbol\tEntrez_Gene_Id\tTCGA-AA-0001-01\tTCGA-AA-0002-01\tTCGA-AA-0003-01\tTCGA-AA-0005-01\n"
        "TP53\t7157\t-1\t0\t2\t0\n"
        "EGFR\t1956\t0\t1\t-2\t0\n")
    maf = _write(tmp_path / "muts.maf",
        "#version 2.4\n"
        "Hugo_Symbol\tVariant_Classification\tTumor_Sample_Barcode\n"
        "TP53\tMissense_Mutation\tTCGA-AA-0001-01A-11D\n"
        "KRAS\tSilent\tTCGA-AA-0002-01A-11D\n"
        "KRAS\tNonsense_Mutation\tTCGA-AA-0003-01A-11D\n"
        "EGFR\tMissense_Mutation\tTCGA-AA-0002-06A-11D\n")
    clin = _write(tmp_path / "data_clinical_patient.txt",
        "#Patient Identifier\tOverall Survival (Months)\tOverall Survival Status\n"
        "#STRING\tNUMBER\tSTRING\n"
        "PATIENT_ID\tOS_MONTHS\tOS_STATUS\n"
        "TCGA-AA-0001\t10.5\t1:DECEASED\n"
        "TCGA-AA-0002\t20\t0:LIVING\n"
        "TCGA-AA-0003\t30\t1:DECEASED\n"
        "TCGA-AA-0006\t40\t0:LIVING\n")
    fams = _write(tmp_path / "fam.csv", "F1,F2\nTP53,KRAS\n,EGFR\n")
    return dict(rnaseq=rna, cnv=cna, maf=maf, clinical=clin, families=fams)


def test_per_modality_known_answer(modality_files, tmp_path):
    f = modality_files
    data = g.load_per_modality(f["rnaseq"], f["cnv"], f["maf"], f["clinical"])
    m = data.matrix
    assert list(m.index) == ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003"]
    assert m.loc["TCGA-AA-0002", "TP53_rnaseq"] == 2.0  # primary 01 chosen, not metastasis 06
    assert m.loc["TCGA-AA-0001", "KRAS_rnaseq"] == 5.0  # duplicate gene rows averaged
    assert m.loc["TCGA-AA-0003", "EGFR_cnv"] == -2
    assert m.loc["TCGA-AA-0001", "TP53_mut"] == 1 and m.loc["TCGA-AA-0002", "TP53_mut"] == 0
    assert m.loc["TCGA-AA-0002", "KRAS_mut"] == 0  # Silent is not counted
    assert m.loc["TCGA-AA-0003", "KRAS_mut"] == 1
    assert "EGFR_mut" not in m.columns  # only in the metastasis sample, which is not chosen
    s = data.survival
    assert s.loc["TCGA-AA-0001"].tolist() == [10.5, 0]
    assert s.loc["TCGA-AA-0002"].tolist() == [20.0, 1]
    reasons = dict(zip(data.dropped["case_id"], data.dropped["reason"]))
    assert reasons["TCGA-AA-0004"].startswith("no genomics (normal")
    assert reasons["TCGA-AA-0005"].startswith("no genomics")  # CNV only
    assert reasons["TCGA-AA-0006"].startswith("no genomics")  # clinical only
    # through the command, with the family file
    out = tmp_path / "out"
    rc = main(["genomics", "--families", str(f["families"]), "-o", str(out),
               "--rnaseq", str(f["rnaseq"]), "--cnv", str(f["cnv"]), "--maf", str(f["maf"]),
               "--clinical", str(f["clinical"])])
    assert rc == 0
    fam = pd.read_csv(out / "families.tsv", sep="\t")
    # F1 = TP53 x (rnaseq, cnv, mut); F2 = KRAS (rnaseq, mut) + EGFR (cnv)
    assert fam["n_features"].tolist() == [3, 3]
    # variant classes are configurable: counting Silent makes KRAS_mut 1 for patient 2
    data2 = g.load_per_modality(f["rnaseq"], f["cnv"], f["maf"], f["clinical"],
                                variant_classes=["Silent", "Missense_Mutation"])
    assert data2.matrix.loc["TCGA-AA-0002", "KRAS_mut"] == 1


def test_gdc_clinical(tmp_path):
    clin = _write(tmp_path / "clinical.tsv",
        "case_submitter_id\tvital_status\tdays_to_death\tdays_to_last_follow_up\ttreatment\n"
        "TCGA-AA-0001\tDead\t365.25\t'--\tA\n"
        "TCGA-AA-0001\tDead\t365.25\t'--\tB\n"
        "TCGA-AA-0002\tAlive\t'--\t730.5\tA\n")
    surv, dropped = g.read_clinical(clin)
    assert surv.loc["TCGA-AA-0001", "survival_months"] == pytest.approx(12.0)
    assert surv.loc["TCGA-AA-0001", "censorship"] == 0
    assert surv.loc["TCGA-AA-0002", "survival_months"] == pytest.approx(24.0)
    assert surv.loc["TCGA-AA-0002", "censorship"] == 1
    assert dropped == []


# ---------------------------------------------------------------- bad input

GOOD = (
    "case_id,slide_id,survival_months,censorship,A_rnaseq,B_cnv\n"
    "P1,s1,10,0,0.5,1\n"
    "P1,s2,10,0,0.5,1\n"
    "P2,s3,20,1,0.1,0\n"
)


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("censorship,", "cens,"), "missing required column.*censorship"),
        (GOOD.replace("0.1,0", "abc,0"), r"row 4 \(P2\), column 'A_rnaseq'.*'abc' is not a number"),
        (GOOD.replace("P2,s3,20,", "P2,s3,,"), "row 4 .*survival_months is missing"),
        (GOOD.replace("P2,s3,20,", "P2,s3,0,"), "survival_months is 0 .must be > 0"),
        (GOOD.replace("P2,s3,20,", "P2,s3,-3,"), "survival_months is -3 "),
        (GOOD.replace("P2,s3,20,1", "P2,s3,20,2"), "censorship is 2"),
        (GOOD.replace("P1,s2,10,0,0.5,1", "P1,s2,10,0,0.7,1"), "case_id P1: .*disagree on gene column 'A_rnaseq'"),
        (GOOD.replace("P1,s2,10,0,", "P1,s2,11,0,"), "case_id P1: .*disagree on survival"),
    ],
)
def test_bad_wide_table(tmp_path, text, message):
    path = _write(tmp_path / "t.csv", text)
    with pytest.raises(CMTAError, match=message) as err:
        g.load_wide_table(path)
    assert str(path) in str(err.value)


def test_missing_survival_can_be_dropped(tmp_path):
    path = _write(tmp_path / "t.csv", GOOD.replace("P2,s3,20,", "P2,s3,,"))
    data = g.load_wide_table(path, missing_survival="drop")
    assert list(data.survival.index) == ["P1"]
    assert data.dropped.values.tolist() == [["P2", "no survival"]]


def test_family_file_with_no_gene_in_data(tmp_path, capsys):
    table = _write(tmp_path / "t.csv", GOOD)
    fams = _write(tmp_path / "f.csv", "F1,F2\nA,ZZZ1\nB,ZZZ2\n")
    rc = main(["genomics", str(table), "--families", str(fams), "-o", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "family 'F2'" in err and "ZZZ1" in err
    assert not (tmp_path / "o" / "families.tsv").exists()


def test_cnv_out_of_range_and_bad_maf(tmp_path):
    cna = _write(tmp_path / "cna.txt", "Hugo_Symbol\tTCGA-AA-0001-01\nTP53\t0.37\n")
    with pytest.raises(CMTAError, match="gene TP53, sample TCGA-AA-0001-01: CNV value 0.37"):
        g.read_gene_matrix(cna, "cnv")
    maf = _write(tmp_path / "m.maf", "Hugo_Symbol\tTumor_Sample_Barcode\nTP53\tTCGA-AA-0001-01\n")
    with pytest.raises(CMTAError, match="Variant_Classification"):
        g.read_maf(maf)


def test_unreadable_value_in_matrix(tmp_path):
    rna = _write(tmp_path / "rna.txt", "Hugo_Symbol\tTCGA-AA-0001-01\nTP53\tx1\n")
    with pytest.raises(CMTAError, match="gene TP53, column 'TCGA-AA-0001-01'"):
        g.read_gene_matrix(rna, "rnaseq")
