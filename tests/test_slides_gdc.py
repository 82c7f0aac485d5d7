"""`cmta slides` on a gdc-client download folder, with the cart's sample sheet or manifest
(issue 19, item 7): real TCGA-COAD slide sheet and manifest (tests/data/gdc/sample_sheets,
provenance in tests/data/gdc/README.md); the slide files are stand-ins (empty, or sparse of
the manifest's size) at gdc-client's ``<File ID>/<File Name>``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cmta_pipeline.cli import main
from cmta_pipeline.errors import CMTAError
from cmta_pipeline.slides import load_slide_table, read_sheet
from cmta_pipeline.slides.gdc import gdc_slide_table

SHEETS = Path(__file__).parent / "data" / "gdc" / "sample_sheets"
COAD_SHEET = SHEETS / "gdc_sample_sheet_tcga_coad_slides_2026.tsv"
COAD_MANIFEST = SHEETS / "gdc_manifest_tcga_coad_slides_2026.txt"


def _download(root: Path, listing: Path, sized: bool = False, skip=()) -> Path:
    """Stand-ins for what `gdc-client download -m MANIFEST -d root` leaves."""
    df = pd.read_csv(listing, sep="\t", dtype=str)
    ids, names = (df["id"], df["filename"]) if "id" in df.columns else (df["File ID"], df["File Name"])
    sizes = df["size"].astype(int) if sized else [0] * len(df)
    for fid, name, size in zip(ids, names, sizes):
        if name in skip:
            continue
        path = root / fid / name
        path.parent.mkdir(parents=True)
        with open(path, "wb") as fh:
            fh.truncate(size)  # sparse: no disk used
    (root / "logs").mkdir()  # gdc-client's own
    return root


def test_slides_of_a_gdc_download_from_its_sample_sheet(tmp_path, capsys):
    dl = _download(tmp_path / "slides", COAD_SHEET)
    out = tmp_path / "sheet.tsv"
    assert main(["slides", "--folder", str(dl), "--gdc-sample-sheet", str(COAD_SHEET), "-o", str(out)]) == 0
    assert "10 slides of 6 patients" in capsys.readouterr().out
    sheet = read_sheet(out).set_index("slide_id")
    row = sheet.loc["TCGA-T9-A92H-01Z-00-DX3.1DE7D5ED-60F7-4645-8243-AB0C027B3ED7"]
    assert row["case_id"] == "TCGA-T9-A92H"
    assert Path(row["path"]).parent.name == "b9a36eb1-ce20-4166-8cb8-a00782229e61"  # no renaming
    assert (sheet["case_id"] == "TCGA-T9-A92H").sum() == 3  # DX1, DX2, DX3
    # the workflow's reader (slides.folder + slides.gdc_sample_sheet) gives the same table
    table = load_slide_table(folder=str(dl), gdc_sample_sheet=str(COAD_SHEET)).set_index("slide_id")
    pd.testing.assert_frame_equal(table.sort_index(), sheet.sort_index())


def test_slides_of_a_gdc_download_from_its_manifest(tmp_path, capsys):
    dl = _download(tmp_path / "slides", COAD_MANIFEST, sized=True)
    table, notes = gdc_slide_table(dl, COAD_MANIFEST)
    assert len(table) == 10 and table["case_id"].nunique() == 6 and notes == []
    # a file cut short: its size is not the manifest's
    victim = next(dl.rglob("TCGA-AZ-4313-*.svs"))
    with open(victim, "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(CMTAError, match=f"{victim.name}: 1,000 bytes where the manifest .* says 664,882,033"):
        gdc_slide_table(dl, COAD_MANIFEST)


def test_files_not_downloaded_are_reported(tmp_path, capsys):
    missing = "TCGA-AA-3939-01Z-00-DX1.6ceb6e8f-a469-4f42-9597-8bf853d95640.svs"
    dl = _download(tmp_path / "slides", COAD_SHEET, skip=[missing])
    assert main(["slides", "--folder", str(dl), "--gdc-sample-sheet", str(COAD_SHEET)]) == 0
    captured = capsys.readouterr()
    assert "1 slide(s) in the sample sheet but not under" in captured.err and missing in captured.err
    assert "TCGA-AA-3939" not in captured.out and captured.out.count(".svs") == 9


def _other_project(tmp_path: Path) -> Path:
    """A sample sheet in the GDC's 2025 layout for slides of a project without TCGA
    barcodes (CPTAC ids as in the real CPTAC-3 sheet; no public CPTAC slide sheet found):
    written here, in the sheet's own format."""
    head = ("File ID\tFile Name\tData Category\tData Type\tProject ID\tCase ID\tSample ID\tTissue Type\t"
            "Tumor Descriptor\tSpecimen Type\tPreservation Method")
    rows = [
        ("a1", "C3L-02707-26.svs", "C3L-02707", "C3L-02707-75", "Tumor", "Primary"),
        ("a2", "C3L-02707-27.svs", "C3L-02707", "C3L-02707-71", "Tumor", "Primary"),
        ("a3", "C3N-03452-22.svs", "C3N-03452", "C3N-03452-05", "Normal", "Not Applicable"),
        ("a4", "C3N-03452-21.svs", "C3N-03452", "C3N-03452-01", "Tumor", "Primary"),
    ]
    lines = [head] + [f"{fid}\t{name}\tBiospecimen\tSlide Image\tCPTAC-3\t{case}\t{sample}\t{tissue}\t{descr}\t"
                      "Solid Tissue\tFFPE" for fid, name, case, sample, tissue, descr in rows]
    sheet = tmp_path / "gdc_sample_sheet.2026-01-01.tsv"
    sheet.write_text("\n".join(lines) + "\n")
    return sheet


def test_slides_of_a_project_without_tcga_barcodes(tmp_path):
    sheet = _other_project(tmp_path)
    dl = _download(tmp_path / "slides", sheet)
    table, notes = gdc_slide_table(dl, sheet)
    assert table[["slide_id", "case_id"]].values.tolist() == [
        ["C3L-02707-26", "C3L-02707"], ["C3L-02707-27", "C3L-02707"], ["C3N-03452-21", "C3N-03452"]]
    assert notes == ["1 slide(s) of non-tumour samples left out: C3N-03452-22.svs"]
    # without the sheet the file names say nothing about the patient
    with pytest.raises(CMTAError, match="C3L-02707-26.svs: cannot derive a case id"):
        load_slide_table(folder=str(dl), recursive=True)
    manifest = tmp_path / "gdc_manifest.txt"
    manifest.write_text("id\tfilename\tmd5\tsize\tstate\na1\tC3L-02707-26.svs\t0\t0\treleased\n")
    with pytest.raises(CMTAError, match="a manifest names no case .* give the cart's sample sheet"):
        gdc_slide_table(dl, manifest)
