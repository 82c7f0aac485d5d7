"""The slide table: sheets and folder discovery by TCGA barcode."""

from __future__ import annotations

import pandas as pd
import pytest

from cmta_pipeline.cli import main
from cmta_pipeline.errors import CMTAError
from cmta_pipeline.slides.sheet import case_id_from_barcode, discover_slides, read_sheet, slide_id_from_path


def test_barcodes_and_ids():
    assert case_id_from_barcode("TCGA-2F-A9KO-01Z-00-DX1.195576CF-B739-4BD9-B15B-4A70AE287D3E.svs") == "TCGA-2F-A9KO"
    assert case_id_from_barcode("slide_7.svs") is None
    assert slide_id_from_path("/x/TCGA-2F-A9KO-01Z-00-DX1.abc.svs") == "TCGA-2F-A9KO-01Z-00-DX1.abc"
    assert slide_id_from_path("a/b/scan.ome.tiff") == "scan.ome"


def test_discover_folder(tmp_path):
    for name in ["TCGA-AA-0001-01Z-00-DX1.x.svs", "TCGA-AA-0001-01Z-00-DX2.y.svs", "TCGA-BB-0002-01Z-00-DX1.z.ndpi", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    table = discover_slides(tmp_path)
    assert list(table.case_id) == ["TCGA-AA-0001", "TCGA-AA-0001", "TCGA-BB-0002"]
    assert list(table.stain) == ["brightfield"] * 3 and table.mpp.isna().all()
    (tmp_path / "other.svs").write_bytes(b"x")
    with pytest.raises(CMTAError, match="other.svs: cannot derive a case id"):
        discover_slides(tmp_path)


def test_sheet_errors(tmp_path):
    p = tmp_path / "s.tsv"
    pd.DataFrame({"slide_id": ["a", "a"], "case_id": ["p", "q"], "path": ["a.svs", "b.svs"]}).to_csv(p, sep="\t", index=False)
    with pytest.raises(CMTAError, match="s.tsv: slide_id 'a' appears twice"):
        read_sheet(p)
    pd.DataFrame({"slide_id": ["a"], "case_id": ["p"], "path": ["a.svs"], "mpp": ["-1"]}).to_csv(p, sep="\t", index=False)
    with pytest.raises(CMTAError, match="mpp of slide 'a' must be a positive number"):
        read_sheet(p)
    pd.DataFrame({"slide_id": ["a"], "case_id": ["p"], "path": ["a.svs"], "stain": ["ihc"]}).to_csv(p, sep="\t", index=False)
    with pytest.raises(CMTAError, match="stain of slide 'a'"):
        read_sheet(p)
    pd.DataFrame({"slide_id": ["a"], "case_id": [""], "path": ["a.svs"]}).to_csv(p, sep="\t", index=False)
    with pytest.raises(CMTAError, match="empty case_id on line 2"):
        read_sheet(p)


def test_cli_writes_sheet(tmp_path, capsys):
    (tmp_path / "TCGA-AA-0001-01Z-00-DX1.svs").write_bytes(b"x")
    out = tmp_path / "sheet.tsv"
    assert main(["slides", "--folder", str(tmp_path), "-o", str(out)]) == 0
    sheet = read_sheet(out)
    assert list(sheet.slide_id) == ["TCGA-AA-0001-01Z-00-DX1"]
