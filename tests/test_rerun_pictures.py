"""A picture-only setting (tiling.qc_max_px, issue 29 item 4) reruns the QC pictures'
job alone, which draws the pictures again at the new size; a tiling setting
(patch_size_px, the negative control) retiles."""

from __future__ import annotations

import json

import cv2
import pytest
import yaml

from tests.test_reruns import jobs, slide, snakemake

SLIDES = ["TCGA-AA-0001-01Z-00-DX1", "TCGA-AA-0007-01Z-00-DX1"]
TARGET = "results/tiles/qc_pictures.tsv"


@pytest.mark.slow
def test_qc_max_px_redraws_the_pictures_only(tmp_path):
    for i, name in enumerate(SLIDES):
        slide(tmp_path / "slides", name, i)
    base = {"outdir": "results", "slides": {"folder": "slides"}, "tiling": {"preset": "biopsy"}}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(base))
    r = snakemake(tmp_path, TARGET)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {rule for rule, _ in jobs(r.stderr)} == {"tile", "qc_pictures"}, jobs(r.stderr)
    png = tmp_path / "results" / "tiles" / SLIDES[0] / f"{SLIDES[0]}.qc.png"
    before = cv2.imread(str(png)).shape
    table = (tmp_path / TARGET).read_text()
    assert table.count("\tkept") == len(SLIDES), table  # the tile jobs drew them at the size

    def plan(tiling):
        r = snakemake(tmp_path, "-n", TARGET, config={**base, "tiling": {"preset": "biopsy", **tiling}})
        assert r.returncode == 0, r.stderr[-3000:]
        return jobs(r.stdout + r.stderr)

    small = {"qc_max_px": 300}
    assert plan(small) == [("qc_pictures", TARGET)]
    assert {rule for rule, _ in plan({"patch_size_px": 256})} == {"tile", "qc_pictures"}
    # the picture follows the setting, and nothing is left to do after
    r = snakemake(tmp_path, "-p", TARGET, config={**base, "tiling": {"preset": "biopsy", **small}})
    assert r.returncode == 0, r.stderr[-3000:]
    after = cv2.imread(str(png)).shape
    assert max(after[:2]) < max(before[:2]) and after[1] == 300, (before, after)
    assert (tmp_path / TARGET).read_text().count("\tredrawn") == len(SLIDES)
    assert json.loads(png.with_suffix(".json").read_text())["qc_max_px"] == 300
    assert plan(small) == []


def test_tile_qc_redraws_only_pictures_of_another_size(slides_dir, tmp_path):
    from cmta_pipeline.errors import CMTAError
    from cmta_pipeline.slides.pictures import redraw_pictures
    from cmta_pipeline.slides.segmentation import TilingParams
    from cmta_pipeline.slides.tiling import tile_slide

    src = tmp_path / "S1.svs"
    src.write_bytes((slides_dir / "CMU-1-Small-Region.svs").read_bytes())
    result = tile_slide(src, tmp_path / "S1", TilingParams(qc_max_px=512), slide_id="S1")
    status = tmp_path / "S1.tile.json"
    status.write_text(json.dumps({"status": "ok", **result.as_dict()}))
    failed = tmp_path / "S2.tile.json"
    failed.write_text(json.dumps({"status": "failed", "slide_id": "S2"}))
    png, table = tmp_path / "S1" / "S1.qc.png", tmp_path / "qc.tsv"
    assert max(cv2.imread(str(png)).shape[:2]) <= 512 + 40
    assert redraw_pictures([status, failed], 512, table) == {"kept": 1, "no picture": 1}
    # a picture of an earlier version (no record): its tiling's qc_max_px says its size
    (tmp_path / "S1" / "S1.qc.json").unlink()
    assert redraw_pictures([status], 512, table) == {"kept": 1}
    before = cv2.imread(str(png)).shape
    assert redraw_pictures([status], 300, table) == {"redrawn": 1}
    after = cv2.imread(str(png)).shape
    assert after[0] < before[0] and after[1] < before[1], (before, after)
    assert json.loads((tmp_path / "S1" / "S1.qc.json").read_text())["qc_max_px"] == 300
    assert redraw_pictures([status], 300, table) == {"kept": 1}
    # a slide moved away: one line naming it (the picture left as it was)
    src.rename(tmp_path / "elsewhere.svs")
    with pytest.raises(CMTAError, match="S1.svs: slide S1 not found"):
        redraw_pictures([status], 400, table)
    assert cv2.imread(str(png)).shape == after
