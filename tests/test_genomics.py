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
UCEC_SIZES = [3, 24, 21, 22, 65, 15]  # = the released code's omic_sizes


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


def test_ucec_loads_with_no_flags_like_the_released_code(tcga_dir):
    fam = g.read_families(tcga_dir / "signatures.csv")
    table = tcga_dir / "tcga_ucec_all_clean.csv.gz"
    # default: the unsuffixed 0/1 columns are left out, as the released dataset code
    # (which selects GENE_mut/_cnv/_rnaseq by name) never uses them; the audit says so
    data = g.load_wide_table(table)
    assert len(data.matrix) == 480
    assert [len(v) for v in g.expand_families(fam, data.matrix.columns).values()] == UCEC_SIZES
    note = [r for r in data.audit if r[1] == "unsuffixed columns left out"]
    assert len(note) == 1 and note[0][2] > 8000 and "A1CF" in note[0][3]
    # declared explicitly, they become mutations
    data = g.load_wide_table(table, unsuffixed="mut")
    expanded = g.expand_families(fam, data.matrix.columns)
    assert [len(v) for v in expanded.values()] == [58, 226, 361, 204, 853, 96]
    for name, feats in expanded.items():
        assert {"cnv", "mut"} <= {f.rsplit("_", 1)[1] for f in feats}, name
    mut = data.matrix[[c for c in data.matrix.columns if c.endswith("_mut")]]
    assert set(np.unique(mut.to_numpy())) <= {0.0, 1.0}


def test_index_artifacts_and_the_released_last_column(tmp_path):
    # LUAD's published table starts ",Unnamed: 0,case_id,...": pandas reads two index
    # columns, "Unnamed: 0" and "Unnamed: 0.1"; neither is a gene nor an error
    path = _write(tmp_path / "luad_like.csv",
        ",Unnamed: 0,case_id,slide_id,survival_months,censorship,A_rnaseq,B_cnv,ZXDC_rnaseq\n"
        "0,0,P1,s1,10,0,0.5,1,3\n1,1,P2,s2,20,1,0.1,0,4\n")
    data = g.load_wide_table(path)
    assert list(data.matrix.columns) == ["A_rnaseq", "B_cnv", "ZXDC_rnaseq"]
    idx = [r for r in data.audit if r[1] == "index columns left out"]
    assert idx and idx[0][2] == 2 and "Unnamed: 0.1" in idx[0][3]
    # the released code moves a table's last column into its metadata
    data = g.load_wide_table(path, drop_last_column=True)
    assert list(data.matrix.columns) == ["A_rnaseq", "B_cnv"]
    assert any(r[1].startswith("last column left out") and "ZXDC_rnaseq" in r[3] for r in data.audit)


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
    assert dropped == {}


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


def test_missing_survival_is_dropped_by_default(tmp_path):
    path = _write(tmp_path / "t.csv", GOOD.replace("P2,s3,20,", "P2,s3,,"))
    data = g.load_wide_table(path)
    assert list(data.survival.index) == ["P1"]
    assert data.dropped.values.tolist() == [["P2", "survival_months missing"]]
    # `error` still stops, and says how to go on: the flag and the config key
    with pytest.raises(CMTAError, match="row 4 .*no usable survival .survival_months missing") as err:
        g.load_wide_table(path, missing_survival="error")
    assert str(path) in str(err.value)
    assert "--missing-survival drop" in str(err.value) and "genomics.missing_survival: drop" in str(err.value)


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
    with pytest.raises(CMTAError, match="gene TP53, sample TCGA-AA-0001-01: copy-number value 0.37 is not a discrete level"):
        g.read_gene_matrix(cna, "cnv")
    maf = _write(tmp_path / "m.maf", "Hugo_Symbol\tTumor_Sample_Barcode\nTP53\tTCGA-AA-0001-01\n")
    with pytest.raises(CMTAError, match="Variant_Classification"):
        g.read_maf(maf)


def test_unreadable_value_in_matrix(tmp_path):
    rna = _write(tmp_path / "rna.txt", "Hugo_Symbol\tTCGA-AA-0001-01\nTP53\tx1\n")
    with pytest.raises(CMTAError, match="gene TP53, column 'TCGA-AA-0001-01'"):
        g.read_gene_matrix(rna, "rnaseq")


# ---------------------------------------------------------------- follow-up of zero or below


@pytest.mark.parametrize("time", ["0", "-3"])
def test_nonpositive_followup_policy(tmp_path, time):
    path = _write(tmp_path / "t.csv", GOOD.replace("P2,s3,20,", f"P2,s3,{time},"))
    # default: dropped, with the reason
    data = g.load_wide_table(path)
    assert list(data.survival.index) == ["P1"]
    assert data.dropped.values.tolist() == [["P2", f"follow-up <= 0 (survival_months {time})"]]
    assert any(r[1] == "patients dropped: follow-up <= 0" and "P2" in r[3] for r in data.audit)
    with pytest.raises(CMTAError, match=f"row 4 .*survival_months is {time} .must be > 0") as err:
        g.load_wide_table(path, nonpositive_followup="error")
    assert str(path) in str(err.value)
    if time == "0":  # kept: an event or censoring at time 0 is valid in scikit-survival
        data = g.load_wide_table(path, nonpositive_followup="keep")
        assert data.survival.loc["P2", "survival_months"] == 0 and data.dropped.empty
    else:
        with pytest.raises(CMTAError, match="negative follow-up cannot be kept"):
            g.load_wide_table(path, nonpositive_followup="keep")
    # new patients (cmta predict) keep their genomics; only the follow-up is left empty
    data = g.load_wide_table(path, missing_survival="keep")
    assert list(data.survival.index) == ["P1", "P2"] and data.survival.loc["P2"].isna().all()
    assert data.survival.loc["P1", "survival_months"] == 10


# ---------------------------------------------------------------- cBioPortal as distributed

ES0 = Path(__file__).parent / "data" / "cbioportal_es0"


def _audit(outdir: Path) -> pd.DataFrame:
    return pd.read_csv(outdir / "audit.tsv", sep="\t", dtype={"detail": str}).fillna("")


def test_cbioportal_study_layout(tmp_path):
    out = tmp_path / "g"
    rc = main([
        "genomics", "--families", str(ES0 / "families.csv"), "-o", str(out),
        "--rnaseq", str(ES0 / "data_mrna_seq_v2_rsem.txt"), "--cnv", str(ES0 / "data_cna_discrete.txt"),
        "--maf", str(ES0 / "data_mutations_extended.maf"), "--clinical", str(ES0 / "data_clinical_patients.txt"),
        "--missing-survival", "drop",
    ])
    assert rc == 0
    m = pd.read_csv(out / "matrix.tsv.gz", sep="\t", index_col="case_id")
    assert list(m.index) == ["TCGA-XA-0001", "TCGA-XA-0002", "TCGA-XA-0003", "TCGA-XA-0004"]
    assert m.loc["TCGA-XA-0002", "ERCC5_cnv"] == 2 and m.loc["TCGA-XA-0003", "AGRN_cnv"] == -2  # long layout
    assert m.loc["TCGA-XA-0004", "ERCC5_rnaseq"] == pytest.approx(97.3)  # the -01, not the normal -11
    assert np.isnan(m.loc["TCGA-XA-0003", "MMP2_rnaseq"])  # NA stays missing
    # TCGA-XA-0002: the primary (-01) is chosen; the recurrence's (-02) BRCA2 nonsense is
    # not counted, nor is TCGA-XA-0001's Silent BRCA2: no counted BRCA2 variant, no column
    assert m.loc["TCGA-XA-0002", "TP53_mut"] == 1 and "BRCA2_mut" not in m.columns
    assert m.loc["TCGA-XA-0003", "TP53_mut"] == 0
    surv = pd.read_csv(out / "patients.tsv", sep="\t", index_col="case_id")
    assert surv.loc["TCGA-XA-0001"].tolist() == [31.77, 0]
    assert surv.loc["TCGA-XA-0002"].tolist() == [24.77, 1]
    assert surv.loc["TCGA-XA-0003"].tolist() == [12.5, 0]  # "DECEASED", the older style
    assert surv.loc["TCGA-XA-0004"].tolist() == [60.02, 1]  # "LIVING"
    dropped = dict(pd.read_csv(out / "dropped.tsv", sep="\t").values)
    assert dropped["TCGA-XA-0005"] == "follow-up <= 0 (survival_months 0)"
    assert dropped["TCGA-XA-0006"] == "OS_STATUS and OS_MONTHS missing"  # empty cells
    assert dropped["TCGA-XA-0007"] == "OS_MONTHS missing (1:DECEASED)"  # [Not Available]
    audit = _audit(out)
    rows = dict(zip(audit["item"] + " @ " + audit["source"].map(lambda s: Path(s).name), audit["detail"]))
    assert "TCGA-XA-0002-02 (chose TCGA-XA-0002-01)" in rows[
        "samples not used: another sample of the patient chosen @ data_mutations_extended.maf"]
    assert "TCGA-XA-0004-11" in rows["samples not used: normal tissue @ data_mrna_seq_v2_rsem.txt"]
    assert rows["layout @ data_cna_discrete.txt"].startswith("long")
    assert "TCGA-XA-0005" in rows["patients dropped: follow-up <= 0 @ all inputs"]
    fam = audit[audit["source"].str.startswith("family Tumor Suppressor Genes")]
    assert dict(zip(fam["item"], fam["count"]))["genes with mut"] == 2  # TP53, ATM
    # the cohort audit lists the zero-follow-up patient with its reason
    from cmta_pipeline.cohort import assemble_cohort

    _, matrix, surv, gdropped = g.read_genomics_dir(out)
    _, caudit = assemble_cohort(surv, matrix.index, gdropped, None)
    assert caudit.set_index("case_id").loc["TCGA-XA-0005", "reason"].startswith("follow-up <= 0")


def test_cbioportal_wide_and_long_cna_and_zscores_agree():
    wide, _ = g.read_gene_matrix(ES0 / "data_cna.txt", "cnv")
    long, _ = g.read_gene_matrix(ES0 / "data_cna_discrete.txt", "cnv")
    pd.testing.assert_frame_equal(wide.sort_index()[sorted(wide.columns)], long.sort_index()[sorted(long.columns)])
    z, _ = g.read_gene_matrix(ES0 / "data_mrna_seq_v2_rsem_zscores_ref_all_samples.txt", "rnaseq")
    assert z.loc["TCGA-XA-0002", "ERCC5_rnaseq"] == pytest.approx(-0.5412)
    assert np.isnan(z.loc["TCGA-XA-0003", "MMP2_rnaseq"])  # [Not Available]
    rsem, _ = g.read_gene_matrix(ES0 / "data_mrna_seq_v2_rsem.txt", "rnaseq")
    assert list(rsem.columns) == ["ERCC5_rnaseq", "MMP2_rnaseq"]  # the row without a symbol is skipped


def test_cbioportal_sample_table_maps_non_tcga_ids(tmp_path):
    # an MSK-style study: sample ids do not contain the patient id as TCGA's do
    samples = _write(tmp_path / "data_clinical_sample.txt",
        "#Patient Identifier\tSample Identifier\tSample Type\n#STRING\tSTRING\tSTRING\n#1\t1\t1\n"
        "PATIENT_ID\tSAMPLE_ID\tSAMPLE_TYPE\n"
        "P-0000001\tP-0000001-T02-IM5\tMetastasis\nP-0000001\tP-0000001-T01-IM3\tPrimary\n"
        "P-0000002\tP-0000002-T01-IM3\tPrimary\n")
    cna = _write(tmp_path / "data_cna.txt",
        "Hugo_Symbol\tP-0000001-T02-IM5\tP-0000001-T01-IM3\tP-0000002-T01-IM3\nTP53\t2\t-1\t0\n")
    clin = _write(tmp_path / "data_clinical_patient.txt",
        "PATIENT_ID\tOS_MONTHS\tOS_STATUS\nP-0000001\t5\t1:DECEASED\nP-0000002\t7\t0:LIVING\n")
    data = g.load_per_modality(cnv=cna, clinical=clin, sample_table=samples)
    assert data.matrix["TP53_cnv"].to_dict() == {"P-0000001": -1, "P-0000002": 0}  # the primary
    assert any("P-0000001-T02-IM5 (chose P-0000001-T01-IM3)" in r[3] for r in data.audit)
    # without the table the sample ids are taken as patients and match no clinical row:
    # an error with an example of each side, not an empty cohort
    with pytest.raises(CMTAError, match=r"only 0 of the 3 patients .* P-0000001-T01-IM3.*clinical ids: P-0000001"):
        g.load_per_modality(cnv=cna, clinical=clin)


# ---------------------------------------------------------------- the GDC as distributed

STAR_HEADER = ("gene_id\tgene_name\tgene_type\tunstranded\tstranded_first\tstranded_second\t"
               "tpm_unstranded\tfpkm_unstranded\tfpkm_uq_unstranded\n")
CN_HEADER = "gene_id\tgene_name\tchromosome\tstart\tend\tcopy_number\tmin_copy_number\tmax_copy_number\n"


def _star(path: Path, tpm: dict[str, float], header: str = STAR_HEADER, extra: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = {"TP53": "ENSG00000141510.18", "KRAS": "ENSG00000133703.13", "OLDNAME": "ENSG00000999999.1"}
    rows = "".join(f"{s}\t\t\t{n}\t{n}\t{n}\t\t\t\n" for s, n in
                   (("N_unmapped", 1e6), ("N_multimapping", 2e6), ("N_noFeature", 3e5), ("N_ambiguous", 4e5)))
    for gene, v in tpm.items():
        rows += f"{ids[gene]}\t{gene}\tprotein_coding\t100\t50\t50\t{v}\t{v / 2}\t{v / 3}\n"
    rows += "ENSG00000182378.14_PAR_Y\tPLCXD1\tprotein_coding\t0\t0\t0\t0\t0\t0\n" + extra
    path.write_text("# gene-model: GENCODE v36\n" + header + rows)


def _cn(path: Path, cn: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"ENSG{i:011d}.1\t{gene}\tchr1\t100\t200\t{v}\t{v}\t{v}\n" for i, (gene, v) in enumerate(cn.items()))
    path.write_text(CN_HEADER + rows)


def _maf_gz(path: Path, rows: list[tuple[str, str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "#version gdc-1.0.0\n#filedate 20220101\n#annotation.spec gdc-1.0.1-public\n"
    text += "Hugo_Symbol\tEntrez_Gene_Id\tCenter\tNCBI_Build\tChromosome\tVariant_Classification\tTumor_Sample_Barcode\tMatched_Norm_Sample_Barcode\n"
    text += "".join(f"{gene}\t0\tWUGSC\tGRCh38\tchr17\t{cls}\t{bc}\t{bc[:12]}-10A-01D-A00X-09\n" for gene, cls, bc in rows)
    with gzip.open(path, "wt") as fh:
        fh.write(text)


@pytest.fixture
def gdc_files(tmp_path):
    d = tmp_path / "gdc"
    sheet_rows = []
    u = iter(f"{i:08d}-0000-4000-8000-000000000000" for i in range(100))
    for case, tpm in (("TCGA-AB-0001", {"TP53": 9.0, "KRAS": 0.0, "OLDNAME": 1.5}),
                      ("TCGA-AB-0002", {"TP53": 3.0, "KRAS": 99.0, "OLDNAME": 0.5})):
        fid = next(u)
        name = f"{next(u)}.rna_seq.augmented_star_gene_counts.tsv"
        _star(d / "star" / fid / name, tpm)
        sheet_rows.append((fid, name, "Transcriptome Profiling", "Gene Expression Quantification", f"{case}-01A", "Primary Tumor", case))
    for case, cn in (("TCGA-AB-0001", {"TP53": "0", "KRAS": "5", "OLDNAME": "2"}),
                     ("TCGA-AB-0002", {"TP53": "1", "KRAS": "3", "OLDNAME": ""})):
        fid = next(u)
        name = f"{fid}.wgs.ASCAT.gene_level.copy_number_variation.tsv".replace(
            "wgs.ASCAT.gene_level.copy_number_variation", "ascat3.gene_level_copy_number.v36")
        _cn(d / "cn" / fid / name, cn)
        sheet_rows.append((fid, name, "Copy Number Variation", "Gene Level Copy Number",
                           f"{case}-01A, {case}-10A", "Primary Tumor, Blood Derived Normal", case))
    _maf_gz(d / "maf" / "a.wxs.aliquot_ensemble_masked.maf.gz",
            [("TP53", "Missense_Mutation", "TCGA-AB-0001-01A-11D-A00X-09")])
    _maf_gz(d / "maf" / "b.wxs.aliquot_ensemble_masked.maf.gz",
            [("KRAS", "Missense_Mutation", "TCGA-AB-0002-01A-11D-A00X-09"),
             ("OLDNAME", "Silent", "TCGA-AB-0002-01A-11D-A00X-09")])
    sheet = d / "gdc_sample_sheet.2024-01-01.tsv"
    sheet.write_text("File ID\tFile Name\tData Category\tData Type\tSample ID\tSample Type\tCase ID\n"
                     + "".join("\t".join(r) + "\n" for r in sheet_rows))
    clin = _write(d / "clinical.tsv",
        "cases.case_id\tcases.submitter_id\tdemographic.vital_status\tdemographic.days_to_death\t"
        "diagnoses.days_to_last_follow_up\tfollow_ups.days_to_follow_up\ttreatments.treatment_type\n"
        "x1\tTCGA-AB-0001\tDead\t365\t'--\t'--\tRadiation Therapy, NOS\n"
        "x1\tTCGA-AB-0001\tDead\t365\t'--\t'--\tPharmaceutical Therapy, NOS\n"
        "x2\tTCGA-AB-0002\tAlive\t'--\t700\t'--\tRadiation Therapy, NOS\n"
        "x2\tTCGA-AB-0002\tAlive\t'--\t'--\t731\tPharmaceutical Therapy, NOS\n")
    aliases = _write(d / "aliases.tsv", "alias\tsymbol\nOLDNAME\tNEWNAME\n")
    fams = _write(d / "fam.csv", "F1,F2\nTP53,KRAS\n,NEWNAME\n")
    return dict(rnaseq=d / "star", cnv=d / "cn", maf=d / "maf", clinical=clin, sheet=sheet,
                aliases=aliases, families=fams, root=d)


def _gdc_args(f, out, **over):
    args = {"--rnaseq": f["rnaseq"], "--cnv": f["cnv"], "--maf": f["maf"], "--clinical": f["clinical"],
            "--gdc-sample-sheet": f["sheet"], "--gene-aliases": f["aliases"]}
    args.update(over)
    flat = ["genomics", "--families", str(f["families"]), "-o", str(out)]
    for k, v in args.items():
        if v is not None:
            flat += [k, str(v)]
    return flat


def test_gdc_downloads_known_answer(gdc_files, tmp_path):
    out = tmp_path / "out"
    assert main(_gdc_args(gdc_files, out)) == 0
    m = pd.read_csv(out / "matrix.tsv.gz", sep="\t", index_col="case_id")
    assert m.loc["TCGA-AB-0001", "TP53_rnaseq"] == pytest.approx(np.log1p(9.0), rel=1e-5)  # TPM, log1p
    assert m.loc["TCGA-AB-0002", "NEWNAME_rnaseq"] == pytest.approx(np.log1p(0.5), rel=1e-5)  # via the alias
    # copy number 0 -> -2, 1 -> -1, 5 -> 2, 3 -> 1, 2 -> 0, missing stays missing
    assert m.loc["TCGA-AB-0001", ["TP53_cnv", "KRAS_cnv", "NEWNAME_cnv"]].tolist() == [-2, 2, 0]
    assert m.loc["TCGA-AB-0002", ["TP53_cnv", "KRAS_cnv"]].tolist() == [-1, 1]
    assert np.isnan(m.loc["TCGA-AB-0002", "NEWNAME_cnv"])
    assert m.loc["TCGA-AB-0001", "TP53_mut"] == 1 and m.loc["TCGA-AB-0002", "KRAS_mut"] == 1
    assert m.loc["TCGA-AB-0002", "TP53_mut"] == 0
    surv = pd.read_csv(out / "patients.tsv", sep="\t", index_col="case_id")
    assert surv.loc["TCGA-AB-0001"].tolist() == [round(365 / 30.44, 2), 0]
    assert surv.loc["TCGA-AB-0002"].tolist() == [round(731 / 30.44, 2), 1]  # the latest follow-up
    audit = _audit(out)
    assert any((audit["item"] == "gene aliases applied") & audit["detail"].str.contains("OLDNAME->NEWNAME"))
    assert any(audit["item"].str.startswith("GDC rnaseq files read (tpm_unstranded, log1p)") & (audit["count"] == 2))
    # another unit
    out2 = tmp_path / "out2"
    assert main(_gdc_args(gdc_files, out2, **{"--rnaseq-unit": "unstranded"})) == 0
    m2 = pd.read_csv(out2 / "matrix.tsv.gz", sep="\t", index_col="case_id")
    assert m2.loc["TCGA-AB-0001", "TP53_rnaseq"] == pytest.approx(np.log1p(100), rel=1e-5)


def test_copy_number_rule():
    from cmta_pipeline.genomics.gdc import copy_number_to_level

    got = copy_number_to_level(np.array([0, 1, 2, 3, 4, 5, 12, np.nan]))
    np.testing.assert_array_equal(got[:7], [-2, -1, 0, 1, 1, 2, 2])
    assert np.isnan(got[7])


# ---------------------------------------------------------------- bad per-modality input


def _fails(capsys, args, outdir: Path, *needles: str) -> str:
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "\n" not in err
    for n in needles:
        assert n in err, (n, err)
    assert not outdir.exists() or not any(outdir.iterdir()), "nothing may be written on bad input"
    return err


def test_bad_cbioportal_inputs(tmp_path, capsys):
    fam = str(ES0 / "families.csv")
    clin = str(ES0 / "data_clinical_patients.txt")
    out = tmp_path / "o"
    base = ["genomics", "--families", fam, "-o", str(out), "--clinical", clin, "--missing-survival", "drop"]
    # a long CNA file without its Value column: the layout is not recognised, and it says so
    lines = (ES0 / "data_cna_discrete.txt").read_text().splitlines()
    bad = _write(tmp_path / "cna_long.txt", "\n".join("\t".join(l.split("\t")[:3]) for l in lines) + "\n")
    _fails(capsys, base + ["--cnv", str(bad)], out, str(bad), "layout not recognised", "'Sample_Id'")
    # duplicate sample: a wide file with one sample column twice; a long file with a (gene, sample) twice
    dup = _write(tmp_path / "cna_dup.txt", "Hugo_Symbol\tTCGA-XA-0001-01\tTCGA-XA-0001-01\nERCC5\t0\t1\n")
    _fails(capsys, base + ["--cnv", str(dup)], out, str(dup), "'TCGA-XA-0001-01' appears twice")
    dup_long = _write(tmp_path / "cna_dup_long.txt", "\n".join(lines + [lines[3]]) + "\n")
    _fails(capsys, base + ["--cnv", str(dup_long)], out, str(dup_long), "given twice (line 4, line 12)")
    # text among the values
    txt = _write(tmp_path / "rna.txt", "Hugo_Symbol\tTCGA-XA-0001-01\nERCC5\tlow\n")
    _fails(capsys, base + ["--rnaseq", str(txt)], out, str(txt), "gene ERCC5, column 'TCGA-XA-0001-01'")
    # gene-symbol collision through an alias
    alias = _write(tmp_path / "alias.tsv", "alias\tsymbol\nAGRN\tERCC5\n")
    _fails(capsys, base + ["--cnv", str(ES0 / "data_cna.txt"), "--gene-aliases", str(alias)], out,
           "data_cna.txt", "'AGRN' is an alias of 'ERCC5'", "collision")
    # unknown OS_STATUS
    clin_bad = _write(tmp_path / "clin.txt", (ES0 / "data_clinical_patients.txt").read_text().replace("1:DECEASED\t31.77", "dead\t31.77"))
    _fails(capsys, ["genomics", "--families", fam, "-o", str(out), "--clinical", str(clin_bad),
                    "--cnv", str(ES0 / "data_cna.txt")], out, str(clin_bad), "patient TCGA-XA-0001", "OS_STATUS 'dead'")


def test_bad_gdc_inputs(gdc_files, tmp_path, capsys):
    f, out = gdc_files, tmp_path / "o"
    # the configured unit is missing from the STAR files
    star = next(f["rnaseq"].rglob("*.tsv"))
    _star(star, {"TP53": 1.0}, header=STAR_HEADER.replace("\ttpm_unstranded", "\ttpm"))
    _fails(capsys, _gdc_args(f, out), out, str(star), "missing column(s) tpm_unstranded", "--rnaseq-unit")
    # a family gene carried by two gene ids
    _star(star, {"TP53": 1.0, "KRAS": 2.0, "OLDNAME": 3.0},
          extra="ENSG00000000001.1\tTP53\tlncRNA\t1\t1\t1\t7\t7\t7\n")
    _fails(capsys, _gdc_args(f, out), out, str(star), "'TP53' is carried by several gene ids",
           "ENSG00000141510, ENSG00000000001")
    _star(star, {"TP53": 1.0, "KRAS": 2.0, "OLDNAME": 3.0})
    # one sample under two cases in the sheet
    original = f["sheet"].read_text()
    sheet = original.splitlines()
    s1, s2 = sheet[1].split("\t"), sheet[2].split("\t")
    s2[4] = s1[4]
    f["sheet"].write_text("\n".join([sheet[0], sheet[1], "\t".join(s2)] + sheet[3:]) + "\n")
    _fails(capsys, _gdc_args(f, out), out, str(f["sheet"]), f"sample {s1[4]} is listed under two cases")
    # two files of one sample (the GDC has such samples: TCGA-44-2656-01A in LUAD): the first
    # by file name is used, the other listed in the audit
    s2[6] = s1[6]
    f["sheet"].write_text("\n".join([sheet[0], sheet[1], "\t".join(s2)] + sheet[3:]) + "\n")
    assert main(_gdc_args(f, out)) == 0
    second = _audit(out).query("item.str.contains('another file of the same sample')", engine="python")
    assert second["count"].tolist() == [1] and s1[4] in second["detail"].iloc[0]
    out = tmp_path / "o2"
    # per-sample files without a sample sheet
    _fails(capsys, _gdc_args(f, out, **{"--gdc-sample-sheet": None, "--gene-aliases": None}), out,
           str(f["rnaseq"]), "--gdc-sample-sheet")
    f["sheet"].write_text(original)
    # a copy number that is not a whole number
    cn = next(f["cnv"].rglob("*.tsv"))
    _cn(cn, {"TP53": "2.5", "KRAS": "3", "OLDNAME": "2"})
    _fails(capsys, _gdc_args(f, out), out, str(cn), "line 2 (gene TP53): copy_number 2.5")


# ---------------------------------------------------------------- round trip


@pytest.mark.slow
def test_blca_round_trip_through_cbioportal_files(tcga_dir, tmp_path):
    """The BLCA wide table exported as cBioPortal files gives the same family matrices."""
    fam = g.read_families(tcga_dir / "signatures.csv")
    wide = g.load_wide_table(tcga_dir / "tcga_blca_all_clean.csv.gz")
    in_families = {f for v in g.expand_families(fam, wide.matrix.columns).values() for f in v}
    for mod, name in (("rnaseq", "data_mrna_seq_v2_rsem.txt"), ("cnv", "data_cna.txt")):
        cols = [c for c in wide.matrix.columns if c.endswith("_" + mod) and c in in_families]
        block = wide.matrix[cols].T
        block.index = [c.rsplit("_", 1)[0] for c in cols]
        block.columns = [f"{c}-01" for c in block.columns]
        block.index.name = "Hugo_Symbol"
        block.to_csv(tmp_path / name, sep="\t", float_format="%.17g")
    status = np.where(wide.survival["censorship"] == 1, "0:LIVING", "1:DECEASED")
    clin = "#Patient Identifier\tOverall Survival (Months)\tOverall Survival Status\n#STRING\tNUMBER\tSTRING\n"
    clin += "PATIENT_ID\tOS_MONTHS\tOS_STATUS\n" + "".join(
        f"{c}\t{t!r}\t{s}\n" for c, t, s in zip(wide.survival.index, wide.survival["survival_months"], status))
    _write(tmp_path / "data_clinical_patient.txt", clin)
    per = g.load_per_modality(tmp_path / "data_mrna_seq_v2_rsem.txt", tmp_path / "data_cna.txt",
                              clinical=tmp_path / "data_clinical_patient.txt")
    a, b = g.expand_families(fam, wide.matrix.columns), g.expand_families(fam, per.matrix.columns)
    assert a == b and [len(v) for v in b.values()] == BLCA_SIZES
    used = sorted({f for v in a.values() for f in v})
    pd.testing.assert_frame_equal(per.matrix.loc[wide.matrix.index, used], wide.matrix[used], check_names=False)
    pd.testing.assert_frame_equal(per.survival.loc[wide.survival.index], wide.survival, check_names=False)
