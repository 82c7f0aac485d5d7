"""`cmta genomics` on genomic and clinical files as the GDC and cBioPortal ship them today
(issue 19): real exports (tests/data/gdc, tests/data/cbioportal; provenance in their
README.md), read with default options and no hand edits. One test per row of the issue's
table, each with a negative control through the same code path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmta_pipeline import genomics as g
from cmta_pipeline.cli import main
from cmta_pipeline.errors import CMTAError
from cmta_pipeline.genomics.gdc_clinical import case_survival
from cmta_pipeline.genomics.gdc_sheet import read_sample_sheet

DATA = Path(__file__).parent / "data"
CLIN = DATA / "gdc" / "clinical"
SHEETS = DATA / "gdc" / "sample_sheets"
STAR = DATA / "gdc" / "star_counts" / "d832db0a-348f-4e28-953a-741192fe0826.rna_seq.augmented_star_gene_counts.EXCERPT.tsv"
LUAD_SHEET = SHEETS / "gdc_sample_sheet_tcga_luad_star_counts_2024.tsv"
ES0 = DATA / "cbioportal" / "study_es_0"
SPEC = DATA / "cbioportal" / "spec_msk_style"
COADREAD = CLIN / "clinical_v2_tcga_coadread_2025-08-17.tsv"
STAR_GENES = "F1,F2\nTP53,KRAS\nEGFR,MYC\n"


def _run(capsys, *args) -> tuple[int, str]:
    rc = main(["genomics", *map(str, args)])
    return rc, capsys.readouterr().err.strip()


def _fams(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "families.csv"
    path.write_text(text)
    return path


def _audit(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "audit.tsv", sep="\t", dtype={"detail": str}).fillna("")


def _dropped(out: Path) -> dict[str, str]:
    return dict(pd.read_csv(out / "dropped.tsv", sep="\t", dtype=str).values)


def _patients(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "patients.tsv", sep="\t", index_col="case_id")


def _matrix(tmp_path: Path, samples: list[str], name: str = "data_mrna.txt") -> Path:
    """A cBioPortal-layout expression matrix (made-up values) of ``samples``."""
    rows = ["Hugo_Symbol\t" + "\t".join(samples)]
    rows += [f"{gene}\t" + "\t".join(f"{i + k / 10:.1f}" for i in range(len(samples))) for k, gene in enumerate(["TP53", "KRAS"])]
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return path


# ------------------------------------------------ row 1: today's GDC clinical.tsv


def test_todays_gdc_clinical_tsv_is_read_by_cases_submitter_id():
    """2025 export: four columns end in submitter_id; the case is cases.submitter_id.
    Several rows per case (treatments x diagnoses): the primary diagnosis carries the
    follow-up, the other diagnoses '--."""
    head = pd.read_csv(COADREAD, sep="\t", nrows=0).columns
    assert sum(c.endswith("submitter_id") for c in head) == 4
    surv, dropped = g.read_clinical(COADREAD)
    assert surv.loc["TCGA-AA-3561"].tolist() == [round(424 / 30.44, 2), 1]  # Alive, 2 treatment rows
    assert surv.loc["TCGA-5M-AAT6"].tolist() == [round(290 / 30.44, 2), 0]  # Dead, 2 diagnoses x 5 treatments
    assert dropped == {
        "TCGA-F5-6810": "vital_status Not Reported, no follow-up",
        "TCGA-5M-AAT5": "vital_status Not Reported, no follow-up",
        "TCGA-CL-4957": "Dead without days_to_death",
        "TCGA-AA-3521": "Alive without follow-up",
        "TCGA-AA-3527": "follow-up <= 0 (survival_months 0)",
    }
    # the demographic/diagnoses/treatments submitter ids are never taken for the case
    assert not any(i.endswith(("_demographic", "_diagnosis", "_treatment")) for i in list(surv.index) + list(dropped))
    # with its follow_up.tsv (198 columns, more *.submitter_id columns): the same cases, the
    # latest follow-up of both files
    audit = []
    surv2, dropped2 = g.read_clinical([COADREAD, CLIN / "follow_up_v2_tcga_coadread_2025-08-17.tsv"], audit=audit)
    pd.testing.assert_frame_equal(surv2, surv)
    assert dropped2 == dropped
    assert any("follow-up table" in r[1] and r[2] == 4 for r in audit)
    # negative control: the follow-up table alone has no vital status
    with pytest.raises(CMTAError, match="clinical.tsv"):
        g.read_clinical(CLIN / "follow_up_v2_tcga_coadread_2025-08-17.tsv")


@pytest.mark.parametrize("name, kept, dropped", [
    ("clinical_v1_tcga_lusc.tsv",  # 2021-24: case_submitter_id, 2 rows per case
     {"TCGA-18-3409": [123.09, 1], "TCGA-85-A4JC": [19.84, 0]},
     dict.fromkeys(["TCGA-6A-AB49", "TCGA-63-A5MU", "TCGA-56-6546"], "Dead without days_to_death")),
    ("clinical_v0_2018_tcga_brca.tsv",  # 2018: submitter_id, lower-case alive, --, CRLF
     {"TCGA-E9-A1N3": [round(1059 / 30.44, 2), 1]},
     {"TCGA-A8-A09G": "follow-up <= 0 (survival_months 0)"}),
    ("clinical_v2_tcga_meso_201cols.tsv",  # 2026: 201 columns; 3 diagnoses, follow-up on the primary
     {"TCGA-3H-AB3K": [round(1715 / 30.44, 2), 0]},
     {"TCGA-TS-A8AV": "Dead without days_to_death"}),
    ("clinical_v2_target_aml.tsv",  # not TCGA: TARGET-AML and TCGA-LAML in one export
     {"TARGET-20-PARLXL": [round(2034 / 30.44, 2), 1], "TARGET-20-PATKKI": [round(470 / 30.44, 2), 0],
      "TCGA-AB-2909": [round(30 / 30.44, 2), 1], "TCGA-AB-2818": [round(303 / 30.44, 2), 0]},
     {}),
])
def test_gdc_clinical_exports_of_every_generation(name, kept, dropped):
    surv, why = g.read_clinical(CLIN / name)
    assert {k: v.tolist() for k, v in surv.iterrows()} == kept
    assert why == dropped


def test_unknown_vital_status_is_censored_at_the_last_contact():
    """No real export with Unknown was found (only Not Reported); the rule, documented
    in docs/genomics.md: alive when last seen, nothing known after = censored there."""
    assert case_survival({"unknown"}, {"Unknown"}, np.nan, 400.0) == (400.0, 1, "")
    assert case_survival({"not reported"}, {"Not Reported"}, np.nan, 400.0) == (400.0, 1, "")
    assert case_survival(set(), set(), np.nan, 400.0) == (400.0, 1, "")  # vital_status '--
    # negative controls: no follow-up, or a death day without a Dead status
    assert case_survival({"unknown"}, {"Unknown"}, np.nan, np.nan)[2] == "vital_status Unknown, no follow-up"
    assert case_survival({"unknown"}, {"Unknown"}, 120.0, 400.0)[2] == "vital_status Unknown with days_to_death"
    assert case_survival({"alive", "dead"}, {"Alive", "Dead"}, 1.0, 2.0)[2].startswith("rows disagree")


# ------------------------------------------------ rows 2 and 6: survival defaults


def test_patients_without_survival_are_dropped_with_their_reason(tmp_path, capsys):
    """LUSC (2021-24 export): three patients are Dead with neither days_to_death nor a
    follow-up; one of them has genomics, two have none. COAD/READ (2025): Not Reported."""
    fams = _fams(tmp_path, "F1\nTP53\nKRAS\n")
    rna = _matrix(tmp_path, ["TCGA-18-3409-01", "TCGA-85-A4JC-01", "TCGA-6A-AB49-01"])
    lusc = CLIN / "clinical_v1_tcga_lusc.tsv"
    out = tmp_path / "out"
    rc, err = _run(capsys, "--families", fams, "-o", out, "--rnaseq", rna, "--clinical", lusc)
    assert rc == 0, err
    assert list(_patients(out).index) == ["TCGA-18-3409", "TCGA-85-A4JC"]
    assert _dropped(out) == dict.fromkeys(["TCGA-56-6546", "TCGA-63-A5MU", "TCGA-6A-AB49"], "Dead without days_to_death")
    audit = _audit(out)
    summary = audit[audit["item"].str.startswith("patients without usable survival")]
    assert summary[["item", "count", "detail"]].values.tolist() == [
        ["patients without usable survival: dropped (--missing-survival drop)", 3, "Dead without days_to_death: 3"]]
    assert audit.set_index("item").loc["patients dropped: Dead without days_to_death", "count"] == 3
    # `error` stops only for patients it would keep, and names the flag and the config key
    rc, err = _run(capsys, "--families", fams, "-o", out, "--rnaseq", rna, "--clinical", lusc,
                   "--missing-survival", "error")
    assert rc == 2 and "patient TCGA-6A-AB49" in err and "Dead without days_to_death" in err
    assert "--missing-survival drop" in err and "genomics.missing_survival: drop" in err
    rna2 = _matrix(tmp_path, ["TCGA-18-3409-01", "TCGA-85-A4JC-01"], "data_mrna2.txt")
    rc, err = _run(capsys, "--families", fams, "-o", out, "--rnaseq", rna2, "--clinical", lusc,
                   "--missing-survival", "error")
    assert rc == 0, err  # the patients without survival have no genomics
    # Not Reported (2025 export): dropped too, also when drop is asked for explicitly
    rna3 = _matrix(tmp_path, ["TCGA-F5-6810-01", "TCGA-AA-3561-01", "TCGA-5M-AAT6-01"], "data_mrna3.txt")
    for extra in ([], ["--missing-survival", "drop"]):
        rc, err = _run(capsys, "--families", fams, "-o", out, "--rnaseq", rna3, "--clinical", COADREAD, *extra)
        assert rc == 0, err
        assert list(_patients(out).index) == ["TCGA-5M-AAT6", "TCGA-AA-3561"]
        assert _dropped(out)["TCGA-F5-6810"] == "vital_status Not Reported, no follow-up"


def test_keep_says_what_it_means(tmp_path, capsys):
    fams = _fams(tmp_path, "F1\nTP53\nKRAS\n")
    rna = _matrix(tmp_path, ["TCGA-18-3409-01", "TCGA-6A-AB49-01"])
    out = tmp_path / "out"
    rc, err = _run(capsys, "--families", fams, "-o", out, "--rnaseq", rna, "--clinical",
                   CLIN / "clinical_v1_tcga_lusc.tsv", "--missing-survival", "keep")
    assert rc == 0, err
    assert _patients(out).loc["TCGA-6A-AB49"].isna().all()
    items = _audit(out).set_index("item")["count"]
    assert items["patients kept (every modality; survival empty where unusable: --missing-survival keep, "
                 "for prediction only)"] == 2
    assert items["patients without usable survival: kept with empty survival (--missing-survival keep: "
                 "for prediction only)"] == 1
    assert "patients kept (every modality and survival)" not in items  # the drop run's line


# ------------------------------------------------ row 3: cBioPortal -1.5


def test_partial_deletion_minus_1_5_is_read_as_deep_deletion(tmp_path, capsys):
    fams = _fams(tmp_path, "F1,F2\nTP53,KRAS\nPTEN,AR\n")
    out = tmp_path / "out"
    rc, err = _run(capsys, "--families", fams, "-o", out, "--cnv", SPEC / "data_CNA.txt",
                   "--clinical", SPEC / "data_clinical_patient.txt")
    assert rc == 0, err
    m = pd.read_csv(out / "matrix.tsv.gz", sep="\t", index_col="case_id")
    assert m.loc["P-9000001", ["PTEN_cnv", "TP53_cnv"]].tolist() == [-2, -2]  # -1.5 and -2
    assert m.loc["P-9000003", "PTEN_cnv"] == 0  # the primary (T01); the metastasis (T02) has -1.5
    row = _audit(out).query("item.str.startswith('copy number -1.5')", engine="python")
    assert row["count"].tolist() == [2]
    # negative control: a value cBioPortal does not allow is still refused, with the file
    bad = tmp_path / "data_CNA.txt"
    bad.write_text((SPEC / "data_CNA.txt").read_text().replace("-1.5", "-1.25", 1))
    rc, err = _run(capsys, "--families", fams, "-o", tmp_path / "o2", "--cnv", bad,
                   "--clinical", SPEC / "data_clinical_patient.txt", "--clinical-samples", SPEC / "data_clinical_sample.txt")
    assert rc == 2 and str(bad) in err and "-1.25 is not a discrete level (-2, -1.5, -1, 0, 1, 2" in err


# ------------------------------------------------ row 4: GDC projects beyond TCGA


def _target_star_run(tmp_path: Path, layout: str) -> tuple[Path, Path]:
    """STAR files of TARGET-AML and TCGA-LAML cases (copies of the real TCGA excerpt: no
    TARGET STAR file is public) and a sample sheet in the GDC's ``layout`` ("2024": Sample
    Type; "2025": Tissue Type and Tumor Descriptor), rows written in its own format."""
    rows = [  # case, sample, Sample Type, Tissue Type, Tumor Descriptor
        ("TARGET-20-PARLXL", "TARGET-20-PARLXL-09A", "Primary Blood Derived Cancer - Bone Marrow", "Tumor", "Primary"),
        ("TARGET-20-PARLXL", "TARGET-20-PARLXL-14A", "Bone Marrow Normal", "Normal", "Not Applicable"),
        ("TARGET-20-PATKKI", "TARGET-20-PATKKI-04A", "Recurrent Blood Derived Cancer - Bone Marrow", "Tumor", "Recurrence"),
        ("TARGET-20-PATKKI", "TARGET-20-PATKKI-09A", "Primary Blood Derived Cancer - Bone Marrow", "Tumor", "Primary"),
        ("TCGA-AB-2909", "TCGA-AB-2909-03A", "Primary Blood Derived Cancer - Peripheral Blood", "Tumor", "Primary"),
        ("TCGA-AB-2818", "TCGA-AB-2818-03A", "Primary Blood Derived Cancer - Peripheral Blood", "Tumor", "Primary"),
    ]
    if layout == "2024":
        lines = ["File ID\tFile Name\tData Category\tData Type\tProject ID\tCase ID\tSample ID\tSample Type"]
    else:
        lines = ["File ID\tFile Name\tData Category\tData Type\tProject ID\tCase ID\tSample ID\tTissue Type\t"
                 "Tumor Descriptor\tSpecimen Type\tPreservation Method"]
    star = tmp_path / "star"
    for i, (case, sample, stype, tissue, descr) in enumerate(rows):
        fid, name = f"{i:08d}-aaaa-4bbb-8ccc-{i:012d}", f"{i:08d}-1111-4222-8333-{i:012d}.rna_seq.augmented_star_gene_counts.tsv"
        (star / fid).mkdir(parents=True)
        shutil.copy(STAR, star / fid / name)
        project = case.rsplit("-", 1)[0].replace("TARGET-20", "TARGET-AML").replace("TCGA-AB", "TCGA-LAML")
        head = f"{fid}\t{name}\tTranscriptome Profiling\tGene Expression Quantification\t{project}\t{case}\t{sample}"
        lines.append(f"{head}\t{stype}" if layout == "2024" else f"{head}\t{tissue}\t{descr}\tBone Marrow\tUnknown")
    sheet = tmp_path / f"gdc_sample_sheet.{layout}.tsv"
    sheet.write_text("\n".join(lines) + "\n")
    return star, sheet


@pytest.mark.parametrize("layout", ["2024", "2025"])
def test_gdc_projects_beyond_tcga_take_the_case_id(tmp_path, capsys, layout):
    star, sheet = _target_star_run(tmp_path, layout)
    out = tmp_path / "out"
    rc, err = _run(capsys, "--families", _fams(tmp_path, STAR_GENES), "-o", out, "--rnaseq", star,
                   "--gdc-sample-sheet", sheet, "--clinical", CLIN / "clinical_v2_target_aml.tsv")
    assert rc == 0, err
    assert sorted(_patients(out).index) == ["TARGET-20-PARLXL", "TARGET-20-PATKKI", "TCGA-AB-2818", "TCGA-AB-2909"]
    audit = _audit(out)
    chose = audit.loc[audit["item"] == "samples not used: another sample of the patient chosen", "detail"].iloc[0]
    assert "TARGET-20-PATKKI-04A (chose TARGET-20-PATKKI-09A)" in chose  # primary before recurrence
    normal = audit.loc[audit["item"] == "samples not used: normal tissue", "detail"].iloc[0]
    assert normal == "TARGET-20-PARLXL-14A"


def test_sample_sheet_of_a_non_tcga_project():
    """CPTAC-3 (2025 layout): ids say nothing about tumour or normal (C3N-03452-05 is
    normal, C3L-03407-05 tumour); files of several tumour samples."""
    sheet = read_sample_sheet(SHEETS / "gdc_sample_sheet_cptac3_wxs_bam_2025.tsv").set_index("File ID")
    row = sheet.loc["233d032c-a42b-4b9e-afc1-d750c4c05951"]  # 5 tumour samples
    assert (row["case_id"], row["sample_id"], row["type_code"]) == ("C3L-03407", "C3L-03407-02", 1)
    assert sheet.loc["852d9345-0a27-41a1-b83a-e25e2bf16e18", "type_code"] == 11  # C3N-03452-05, Normal
    assert sheet.loc["867233a4-8efd-4dbe-8ec6-bdd9c988c603", ["case_id", "type_code"]].tolist() == ["C224106", 2]
    assert sheet.loc["68b960fe-389d-45f1-a5b1-4500a8670c48", ["case_id", "sample_id"]].tolist() == ["C224106", "SM-JU32N"]
    # paired TCGA files, tumour listed first or second: the tumour is the file's sample
    paired = read_sample_sheet(SHEETS / "gdc_sample_sheet_tcga_lihc_chol_snv_paired_2022.tsv")
    assert paired["sample_id"].tolist() == ["TCGA-CC-5258-01A", "TCGA-DD-AAEG-01A", "TCGA-DD-AACF-01A",
                                            "TCGA-DD-A39V-01A", "TCGA-DD-AACA-02B", "TCGA-ES-A2HT-01A", "TCGA-ZS-A9CF-02A"]


def test_ids_that_do_not_match_are_an_error_with_both_sides(tmp_path, capsys):
    """CPTAC sample ids read without their sample sheet against a TARGET clinical table:
    no patient matches. Today: 0 patients and exit 0."""
    fams = _fams(tmp_path, "F1\nTP53\nKRAS\n")
    clin = CLIN / "clinical_v2_target_aml.tsv"
    rna = _matrix(tmp_path, ["1105192", "SM-JU32N", "C3L-02707-75"])
    out = tmp_path / "out"
    rc, err = _run(capsys, "--families", fams, "-o", out, "--rnaseq", rna, "--clinical", clin)
    assert rc == 2 and "only 0 of the 3 patients" in err
    assert "1105192" in err and "TARGET-20-PARLXL" in err and "--gdc-sample-sheet" in err
    assert not out.exists() or not any(out.iterdir())
    # fewer than half matched: still an error; half or more: a run (negative control)
    rna = _matrix(tmp_path, ["TARGET-20-PARLXL-09A", "1105192", "SM-JU32N"], "one_of_three.txt")
    rc, err = _run(capsys, "--families", fams, "-o", out, "--rnaseq", rna, "--clinical", clin)
    assert rc == 2 and "only 1 of the 3 patients" in err
    rna = _matrix(tmp_path, ["TARGET-20-PARLXL-09A", "TARGET-20-PATKKI-09A", "SM-JU32N"], "two_of_three.txt")
    rc, err = _run(capsys, "--families", fams, "-o", out, "--rnaseq", rna, "--clinical", clin)
    assert rc == 0, err
    assert _dropped(out)["SM-JU32N"] == "no clinical row"


# ------------------------------------------------ row 5: complete files only


def _luad_run(tmp_path: Path, names=("d832db0a", "b556d35a", "367864dd")) -> tuple[Path, dict[str, Path]]:
    """The real LUAD sample sheet, with the real STAR excerpt copied under the names of
    three of its files (TCGA-44-6146-01A, TCGA-44-2656-01A, TCGA-73-4658-01A)."""
    sheet = pd.read_csv(LUAD_SHEET, sep="\t")
    files = {}
    for prefix in names:
        row = sheet[sheet["File Name"].str.startswith(prefix)].iloc[0]
        path = tmp_path / "star" / row["File ID"] / row["File Name"]
        path.parent.mkdir(parents=True)
        shutil.copy(STAR, path)
        files[prefix] = path
    return tmp_path / "star", files


def _star_args(tmp_path, star, out):
    clin = tmp_path / "data_clinical_patient.txt"
    clin.write_text("PATIENT_ID\tOS_STATUS\tOS_MONTHS\nTCGA-44-6146\t0:LIVING\t10\n"
                    "TCGA-44-2656\t1:DECEASED\t5\nTCGA-73-4658\t0:LIVING\t7\n")
    return ["--families", _fams(tmp_path, STAR_GENES), "-o", out, "--rnaseq", star,
            "--gdc-sample-sheet", LUAD_SHEET, "--clinical", clin]


@pytest.mark.parametrize("cut", ["mid_number", "last_field", "line_boundary", "first_file"])
def test_a_cut_off_star_file_is_refused(tmp_path, capsys, cut):
    star, files = _luad_run(tmp_path)
    out = tmp_path / "out"
    rc, err = _run(capsys, *_star_args(tmp_path, star, out))
    assert rc == 0, err  # negative control: whole files
    assert len(_patients(out)) == 3
    text = STAR.read_bytes()
    victim = files["b556d35a"] if cut != "first_file" else files["367864dd"]
    if cut == "mid_number":  # "...\t4\t9\t6\t0.2249\t0.1023\t0.0971\n" cut in "0.2249"
        victim.write_bytes(text[: text.rindex(b"0.2249") + 4])
    elif cut == "last_field":  # every field there, the last one cut: 0.0971 -> 0.09
        victim.write_bytes(text[:-3])
    else:  # cut at a line end: two genes fewer (the first file read when "first_file")
        victim.write_bytes(b"".join(text.splitlines(keepends=True)[:-2]))
    rc, err = _run(capsys, *_star_args(tmp_path, star, out))
    assert rc == 2 and str(victim) in err and "cut off" in err, err
    assert not out.exists() or not any(out.iterdir()), "nothing written, and the earlier run's files are gone"


def test_star_file_checked_against_its_own_header(tmp_path, capsys):
    star, files = _luad_run(tmp_path, names=("d832db0a",))
    out = tmp_path / "out"
    path = files["d832db0a"]
    lines = STAR.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4]))  # cut after N_multimapping: the only file of the run
    rc, err = _run(capsys, *_star_args(tmp_path, star, out))
    assert rc == 2 and str(path) in err and "no N_noFeature, N_ambiguous row" in err
    path.write_text("".join(lines[1:]))  # no gene-model line
    rc, err = _run(capsys, *_star_args(tmp_path, star, out))
    assert rc == 2 and "no '# gene-model: ...' first line" in err
    star2, files2 = _luad_run(tmp_path / "two", names=("d832db0a", "b556d35a"))
    files2["d832db0a"].write_text("".join(lines).replace("GENCODE v36", "GENCODE v22"))
    rc, err = _run(capsys, *_star_args(tmp_path, star2, out))
    assert rc == 2 and "gene model" in err and "GENCODE v22" in err
    path.write_bytes(b"")  # an empty file: the download, not the unit
    rc, err = _run(capsys, *_star_args(tmp_path, star, out))
    assert rc == 2 and str(path) in err and "empty (0 bytes)" in err and "--rnaseq-unit" not in err


def test_a_cut_off_maf_or_clinical_table_is_refused(tmp_path, capsys):
    fams = _fams(tmp_path, "F1\nBRAF\nZNF804A\n")
    maf_dir = tmp_path / "maf"
    maf_dir.mkdir()
    maf = maf_dir / "1feaf21d-8259-4c70-bcb7-7e3fb0887ea4.wxs.aliquot_ensemble_masked.maf"
    shutil.copy(DATA / "gdc" / "maf" / maf.name, maf)
    clin = tmp_path / "clinical.tsv"  # the real MESO rows, one case renamed to the MAF's
    clin.write_bytes((CLIN / "clinical_v2_tcga_meso_201cols.tsv").read_bytes().replace(b"TCGA-3H-AB3K", b"TCGA-DJ-A2Q6"))
    out = tmp_path / "out"
    rc, err = _run(capsys, "--families", fams, "-o", out, "--maf", maf_dir, "--clinical", clin)
    assert rc == 0, err  # negative control: whole files
    text = maf.read_bytes()
    maf.write_bytes(text[: len(text) - 400])
    rc, err = _run(capsys, "--families", fams, "-o", out, "--maf", maf_dir, "--clinical", clin)
    assert rc == 2 and str(maf) in err and "the last row has" in err and "cut off" in err
    assert not out.exists() or not any(out.iterdir())
    maf.write_bytes(text)
    whole = clin.read_bytes()
    clin.write_bytes(whole[: len(whole) - 700])
    rc, err = _run(capsys, "--families", fams, "-o", out, "--maf", maf_dir, "--clinical", clin)
    assert rc == 2 and str(clin) in err and "cut off" in err


# ------------------------------------------------ row 7: sequenced without a mutation


def test_sequenced_patients_without_a_mutation_are_kept(tmp_path, capsys):
    """MSK-style study: P-9000002 is in cases_sequenced but not in the MAF."""
    fams = _fams(tmp_path, "F1\nTP53\nAR\n")
    out = tmp_path / "out"
    rc, err = _run(capsys, "--families", fams, "-o", out, "--maf", SPEC / "data_mutations.txt",
                   "--clinical", SPEC / "data_clinical_patient.txt",
                   "--clinical-samples", SPEC / "data_clinical_sample.txt")
    assert rc == 0, err
    m = pd.read_csv(out / "matrix.tsv.gz", sep="\t", index_col="case_id")
    assert list(m.index) == ["P-9000001", "P-9000002", "P-9000003"]
    assert m.loc["P-9000002", "TP53_mut"] == 0  # sequenced, no mutation: zero
    assert np.isnan(m.loc["P-9000002", "AR_mut"])  # AR is not on its panel: missing, not zero
    assert m.loc["P-9000001", "AR_mut"] == 0  # IMPACT468 has no gene list here: as given
    audit = _audit(out)
    assert audit.loc[audit["item"].str.startswith("samples sequenced without a mutation"), "detail"].tolist() == [
        "P-9000002-T01-IM5"]
    assert audit["item"].str.startswith("gene panels without a gene list").any()
    # negative control: the same MAF outside its study folder has no case list
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(SPEC / "data_mutations.txt", alone / "data_mutations.txt")
    rc, err = _run(capsys, "--families", fams, "-o", out, "--maf", alone / "data_mutations.txt",
                   "--clinical", SPEC / "data_clinical_patient.txt",
                   "--clinical-samples", SPEC / "data_clinical_sample.txt")
    assert rc == 0, err
    assert _dropped(out)["P-9000002"] == "no genomics (no mut data)"


def test_cbioportal_study_folder_as_one_argument(tmp_path, capsys):
    fams = _fams(tmp_path, "F1,F2\nTP53,KRAS\nPTEN,AR\n")
    out = tmp_path / "out"
    rc, err = _run(capsys, "--families", fams, "-o", out, "--cbioportal", SPEC)
    assert rc == 0, err
    m = pd.read_csv(out / "matrix.tsv.gz", sep="\t", index_col="case_id")
    assert list(m.index) == ["P-9000001", "P-9000002", "P-9000003"]
    assert m.loc["P-9000001", "PTEN_cnv"] == -2 and m.loc["P-9000002", "TP53_mut"] == 0
    assert np.isnan(m.loc["P-9000002", "AR_cnv"]) and np.isnan(m.loc["P-9000002", "AR_mut"])  # off its panel
    assert m.loc["P-9000003", "AR_cnv"] == 2  # on IMPACT468 (no gene list: as given)
    assert _dropped(out) == {"P-9000004": "OS_MONTHS missing (0:LIVING)", "P-9000005": "no genomics (no cnv/mut data)"}
    used = _audit(out).query("item.str.startswith('study file for')", engine="python")["item"].tolist()
    assert used == ["study file for clinical: data_clinical_patient.txt", "study file for samples: data_clinical_sample.txt",
                    "study file for cnv: data_CNA.txt", "study file for maf: data_mutations.txt"]


def test_study_es_0_follows_its_case_list(tmp_path, capsys):
    """cBioPortal's own test study: 31 samples in cases_sequenced, 21 with a mutation.
    Its meta files pick the DISCRETE_LONG copy number (not the log2 file) and the z-scores."""
    fams = _fams(tmp_path, "F1,F2,F3\nERCC5,MMP2,TP53\nATAD3A,AGRN,BRCA1\n,ACAP3,BRCA2\n")
    out = tmp_path / "out"
    rc, err = _run(capsys, "--families", fams, "-o", out, "--cbioportal", ES0, "--missing-survival", "keep")
    assert rc == 0, err
    audit = _audit(out)
    src = audit["source"].map(lambda s: Path(s).name)
    by = dict(zip(audit["item"] + " @ " + src, audit["count"]))
    assert by["samples profiled for mutations (case list) @ cases_sequenced.txt"] == 31
    assert by["samples found @ data_mutations_extended.maf"] == 31
    assert by["patients with a tumour sample @ data_mutations_extended.maf"] == 28
    assert by["samples sequenced without a mutation (case list): all zero @ data_mutations_extended.maf"] == 10
    assert "study file for cnv: data_cna_discrete.txt @ study_es_0" in by
    assert "study file for rnaseq: data_expression_median_Zscores.txt @ study_es_0" in by
    # mutations only: the 28 patients of the 31 sequenced samples (TEST_SAMPLE_* through the
    # sample table), TCGA-GI-A2C8 among them with zeros
    fams_mut = _fams(tmp_path, "F1\nTP53\nBRCA1\nBRCA2\n")
    rc, err = _run(capsys, "--families", fams_mut, "-o", out, "--maf", ES0 / "data_mutations_extended.maf",
                   "--clinical", ES0 / "data_clinical_patients.txt", "--missing-survival", "keep")
    assert rc == 0, err
    m = pd.read_csv(out / "matrix.tsv.gz", sep="\t", index_col="case_id")
    assert len(m) == 28 and (m.loc["TCGA-GI-A2C8"] == 0).all() and "TEST_PATIENT_5" in m.index
    # default: those without survival are dropped for that reason, not for "no mut data"
    rc, err = _run(capsys, "--families", fams_mut, "-o", out, "--maf", ES0 / "data_mutations_extended.maf",
                   "--clinical", ES0 / "data_clinical_patients.txt")
    assert rc == 0, err
    assert _dropped(out)["TCGA-GI-A2C8"] == "OS_STATUS and OS_MONTHS missing"
    assert len(_patients(out)) == 11


# ------------------------------------------------ row 8 and the smaller items


def test_a_failed_rerun_leaves_no_finished_looking_folder(tmp_path, capsys):
    star, files = _luad_run(tmp_path)
    out = tmp_path / "out"
    args = _star_args(tmp_path, star, out)
    rc, err = _run(capsys, *args)
    assert rc == 0 and (out / "families.tsv").is_file()
    (out / "notes.txt").write_text("mine")  # not an output: left alone
    files["b556d35a"].write_bytes(STAR.read_bytes()[:-3])
    rc, err = _run(capsys, *args)
    assert rc == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_maf_folder_reads_txt_files(tmp_path, capsys):
    fams = _fams(tmp_path, "F1\nTP53\nKRAS\n")
    nsclc = DATA / "cbioportal" / "nsclc_pd1_msk_2018_excerpt"
    folder = tmp_path / "mafs"
    folder.mkdir()
    shutil.copy(nsclc / "data_mutations.txt", folder / "data_mutations.txt")
    (folder / "annotations.txt").write_text("id\tentity_type\tnotes\nx\tcase\tnone\n")  # gdc-client's
    clin = tmp_path / "data_clinical_patient.txt"
    ids = pd.read_csv(nsclc / "data_clinical_sample.txt", sep="\t", comment="#")["PATIENT_ID"]
    clin.write_text("PATIENT_ID\tOS_STATUS\tOS_MONTHS\n" + "".join(f"{p}\t0:LIVING\t10\n" for p in ids))
    out = tmp_path / "out"
    rc, err = _run(capsys, "--families", fams, "-o", out, "--maf", folder, "--clinical", clin,
                   "--clinical-samples", nsclc / "data_clinical_sample.txt")
    assert rc == 0, err
    assert len(_patients(out)) == 8
    audit = _audit(out).set_index("item")
    assert audit.loc["files not read: not a MAF", "detail"] == "annotations.txt"
    assert audit.loc["MAF files read", "count"] == 1
