"""The slide stage on real slides (../shared/data/slides) and synthetic slides of known geometry."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import openslide
import pytest

from cmta_pipeline.cli import main
from cmta_pipeline.errors import CMTAError
from cmta_pipeline.slides.patching import read_coords, select_patches
from cmta_pipeline.slides.segmentation import TilingParams
from cmta_pipeline.slides.synthetic import demo_specimen, write_synthetic_slide
from cmta_pipeline.slides.tiling import tile_slide
from cmta_pipeline.slides.wsi import open_slide, slide_geometry

# ---- real slides -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def cmu_tiles(slides_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmu")
    result = tile_slide(slides_dir / "CMU-1-Small-Region.svs", out)
    return result, out


def test_cmu_patch_geometry(cmu_tiles):
    result, out = cmu_tiles
    # 20x slide (0.499 um/px): a 128 um patch is about 256 px at level 0, read without upsampling.
    assert result.mpp == pytest.approx(0.499)
    assert 255 <= result.patch_size_level0 <= 258
    assert result.read_level == 0 and not result.upsampled
    assert result.n_patches >= 10
    cf = read_coords(out / "CMU-1-Small-Region.coords.h5")
    assert cf.coords.dtype == np.int64 and cf.coords.shape == (result.n_patches, 2)
    assert cf.attrs["patch_size"] == result.patch_size_level0 and cf.attrs["patch_level"] == 0
    for key in ("mpp", "target_mpp", "patch_size_level0", "read_level", "segmentation", "mpp_source"):
        assert key in cf.attrs


def test_cmu_patches_inside_slide_and_mostly_tissue(cmu_tiles, slides_dir):
    """Judge each patch by the pixels read from the slide, not by our own mask."""
    result, out = cmu_tiles
    cf = read_coords(out / "CMU-1-Small-Region.coords.h5")
    slide = openslide.OpenSlide(str(slides_dir / "CMU-1-Small-Region.svs"))
    w, h = slide.dimensions
    ps = result.patch_size_level0
    assert (cf.coords >= 0).all()
    assert (cf.coords[:, 0] + ps <= w).all() and (cf.coords[:, 1] + ps <= h).all()
    fractions = []
    for x, y in cf.coords:
        rgb = np.asarray(slide.read_region((int(x), int(y)), 0, (ps, ps)))[..., :3]
        hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
        fractions.append(((hsv[..., 1] > 25) & (hsv[..., 2] < 245)).mean())
    fractions = np.array(fractions)
    assert fractions.min() > 0.3, fractions.min()
    assert np.median(fractions) > 0.6
    # and the background that was left out really is background
    rgb = np.asarray(slide.read_region((0, 0), 0, (200, 200)))[..., :3]
    assert (cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)[..., 1] > 25).mean() < 0.1


def test_cmu_qc_image(cmu_tiles):
    result, out = cmu_tiles
    img = cv2.imread(str(out / "CMU-1-Small-Region.qc.png"))
    assert img is not None and max(img.shape[:2]) >= 1000
    bgr = img.reshape(-1, 3).astype(int)
    green = (bgr[:, 1] > 150) & (bgr[:, 0] < 60) & (bgr[:, 2] < 60)  # tissue contours
    assert green.sum() > 500
    # the small JPEG the Snakemake report embeds: the same picture, tens of kB, not the
    # PNG's hundreds
    jpg = out / "CMU-1-Small-Region.qc.jpg"
    thumb = cv2.imread(str(jpg))
    assert max(thumb.shape[:2]) == 480 and jpg.stat().st_size < 100_000
    assert (out / "CMU-1-Small-Region.qc.png").stat().st_size > 4 * jpg.stat().st_size
    small = cv2.resize(img, thumb.shape[1::-1], interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(small - thumb).mean() < 12  # the same picture (JPEG noise only)


def test_ndpi_40x_reads_from_level_1(slides_dir, tmp_path):
    params = TilingParams(stain="fluorescence")
    result = tile_slide(slides_dir / "ndpi-fluorescence-40x.ndpi", tmp_path, params)
    # 0.228 um/px: level 1 (0.456 um/px) still resolves the 0.571 um/px the encoder needs.
    assert result.read_level == 1
    assert result.patch_size_read == pytest.approx(result.patch_size_level0 / 2, abs=1)
    assert result.n_patches > 20


def test_ndpi_brightfield_detector_says_fluorescence(slides_dir, tmp_path):
    with pytest.raises(CMTAError, match="fluorescence"):
        tile_slide(slides_dir / "ndpi-fluorescence-40x.ndpi", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_dicom_opens_and_low_resolution_is_refused(slides_dir, tmp_path):
    path = slides_dir / "camelyon-lowres-jpeg.dcm"
    slide = open_slide(path)
    geom = slide_geometry(slide, path)
    assert geom.dimensions == (1152, 700)
    assert geom.mpp == pytest.approx(28.97, rel=1e-3)
    with pytest.raises(CMTAError, match="upsampl"):
        tile_slide(path, tmp_path)
    result = tile_slide(path, tmp_path, TilingParams(allow_upsampling=True, preset="biopsy"))
    assert result.upsampled
    assert read_coords(tmp_path / "camelyon-lowres-jpeg.coords.h5").attrs["upsampled"]


def test_tiny_synthetic_svs_opens(slides_dir, tmp_path):
    path = slides_dir / "openslide-small-synthetic.svs"
    geom = slide_geometry(open_slide(path), path)
    assert geom.dimensions == (16, 16) and geom.mpp == pytest.approx(0.499)
    with pytest.raises(CMTAError, match="smaller than one"):
        tile_slide(path, tmp_path)


def test_mpp_override_and_missing_mpp(slides_dir, tmp_path):
    result = tile_slide(slides_dir / "CMU-1-Small-Region.svs", tmp_path, mpp=0.25)
    assert result.mpp_source == "override" and result.patch_size_level0 == 512
    # a tiled TIFF without resolution tags has no pixel size: a clear error, no guess
    import tifffile

    path = tmp_path / "nompp.tif"
    tifffile.imwrite(path, np.full((512, 512, 3), 240, np.uint8), tile=(256, 256), photometric="rgb")
    with pytest.raises(CMTAError, match=r"nompp.tif: no pixel size .*--mpp"):
        tile_slide(path, tmp_path / "out")


# ---- synthetic slides of known geometry ------------------------------------------------


@pytest.fixture(scope="session")
def specimen_slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("synthetic")
    shapes, w_um, h_um = demo_specimen()
    paths = {}
    for mpp in (0.25, 0.5):
        paths[mpp] = d / f"specimen_{mpp}.tif"
        write_synthetic_slide(paths[mpp], shapes, w_um, h_um, mpp)
    return paths, shapes


def _tile(path, out):
    result = tile_slide(path, out, TilingParams(preset="biopsy"))
    return result, read_coords(out / f"{path.stem}.coords.h5").coords


def test_synthetic_patch_count_matches_geometry(specimen_slides, tmp_path):
    paths, shapes = specimen_slides
    cell = 128.0**2
    tissue_area = sum(s.area_um2 for s in shapes[:2]) - shapes[2].area_um2  # the speck is ignored
    expected = tissue_area / cell  # 24 (block) + about 91 (ellipse minus hole)
    for mpp, path in paths.items():
        result, coords = _tile(path, tmp_path / str(mpp))
        # grid cells kept when >= 50% tissue: the count matches the area to within 5%
        assert result.n_patches == pytest.approx(expected, rel=0.05), (mpp, result.n_patches, expected)
        um = coords * mpp
        block = (um[:, 0] >= 256) & (um[:, 0] < 256 + 768) & (um[:, 1] >= 384) & (um[:, 1] < 384 + 512)
        assert block.sum() == 24  # the grid-aligned block is tiled exactly
        # no patch is centred in the hole, none on the speck
        cx, cy = um[:, 0] + 64, um[:, 1] + 64
        assert not (((cx - 2048) ** 2 + (cy - 1024) ** 2) < 100**2).any()
        assert not ((cx > 400) & (cx < 700) & (cy > 1500)).any()
        assert result.tissue_area_um2 == pytest.approx(tissue_area, rel=0.05)


def test_synthetic_40x_and_20x_agree(specimen_slides, tmp_path):
    paths, _ = specimen_slides
    r40, c40 = _tile(paths[0.25], tmp_path / "40x")
    r20, c20 = _tile(paths[0.5], tmp_path / "20x")
    assert r40.patch_size_level0 == 512 and r20.patch_size_level0 == 256
    assert r20.read_level == 0 and not r20.upsampled
    a = {tuple(c) for c in (c40 * 0.25).round().astype(int)}
    b = {tuple(c) for c in (c20 * 0.5).round().astype(int)}
    assert len(a & b) / len(a | b) > 0.95  # the same physical patches


def test_grid_selection_known_answer():
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:40] = 1  # 20 x 20 mask px at downsample 4 = 80 x 80 level-0 px
    coords = select_patches(mask, 4.0, (240, 160), patch=40, step=40)
    assert sorted(map(tuple, coords)) == [(80, 40), (80, 80), (120, 40), (120, 80)]
    hard = select_patches(mask, 4.0, (240, 160), 40, 40, rule="four_point_hard")
    assert sorted(map(tuple, hard)) == sorted(map(tuple, coords))
    # half-overlapping grid: x and y each take 60..140 (a quarter or more inside) -> 5 x 5
    assert len(select_patches(mask, 4.0, (240, 160), 40, 20, min_fraction=0.25)) == 25
    assert len(select_patches(mask, 4.0, (240, 160), 40, 20, min_fraction=0.5)) == 21  # all but the 4 corners (0.25)


# ---- bad input through the command line -----------------------------------------------


def _run_cli(args, capsys):
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.err.strip().splitlines()


def _assert_clean_failure(rc, err_lines, name, outdir, cause):
    assert rc == 2
    errors = [l for l in err_lines if "error:" in l]
    assert len(errors) == 1 and name in errors[0] and cause in errors[0], err_lines
    assert not outdir.exists() or list(outdir.iterdir()) == []


def test_cli_missing_file(tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = _run_cli(["tile", str(tmp_path / "gone.svs"), "-o", str(out)], capsys)
    _assert_clean_failure(rc, err, "gone.svs", out, "not found")


def test_cli_not_a_slide(tmp_path, capsys):
    fake = tmp_path / "notes.svs"
    fake.write_text("this is not a slide\n" * 100)
    out = tmp_path / "out"
    rc, err = _run_cli(["tile", str(fake), "-o", str(out)], capsys)
    _assert_clean_failure(rc, err, "notes.svs", out, "not a slide")


def test_cli_truncated_slide(slides_dir, tmp_path, capsys):
    data = (slides_dir / "CMU-1-Small-Region.svs").read_bytes()
    bad = tmp_path / "truncated.svs"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    rc, err = _run_cli(["tile", str(bad), "-o", str(out)], capsys)
    _assert_clean_failure(rc, err, "truncated.svs", out, "")


def test_cli_corrupt_tiles(tmp_path, capsys):
    """A slide whose header is fine but whose JPEG tiles are garbage fails on read."""
    shapes, w, h = demo_specimen()
    path = tmp_path / "corrupt.tif"
    write_synthetic_slide(path, shapes, w, h, 0.5)
    raw = bytearray(path.read_bytes())
    raw[2000 : len(raw) - 2000] = bytes(len(raw) - 4000)  # zero every tile's data
    path.write_bytes(bytes(raw))
    out = tmp_path / "out"
    rc, err = _run_cli(["tile", str(path), "-o", str(out)], capsys)
    _assert_clean_failure(rc, err, "corrupt.tif", out, "")


def test_cli_no_tissue(tmp_path, capsys):
    path = tmp_path / "blank.tif"
    write_synthetic_slide(path, [], 2048, 2048, 0.5)
    out = tmp_path / "out"
    rc, err = _run_cli(["tile", str(path), "-o", str(out)], capsys)
    _assert_clean_failure(rc, err, "blank.tif", out, "no tissue")


def test_cli_skip_policy_writes_failed_status(tmp_path, capsys):
    import json

    status = tmp_path / "x.tile.json"
    rc, _ = _run_cli(
        ["tile", str(tmp_path / "gone.svs"), "-o", str(tmp_path / "o"), "--status", str(status), "--on-error", "skip"],
        capsys,
    )
    assert rc == 0
    s = json.loads(status.read_text())
    assert s["status"] == "failed" and "not found" in s["reason"]


def test_cli_success_writes_outputs(slides_dir, tmp_path, capsys):
    rc, _ = _run_cli(["tile", str(slides_dir / "CMU-1-Small-Region.svs"), "-o", str(tmp_path), "--slide-id", "S1"], capsys)
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S1.coords.h5", "S1.qc.jpg", "S1.qc.json", "S1.qc.png"]
    with h5py.File(tmp_path / "S1.coords.h5") as f:
        assert f["coords"].dtype == np.int64 and f["coords"].attrs["slide_id"] == "S1"


def test_cli_batch_tiles_each_slide_as_alone_and_names_bad_items(tmp_path, capsys):
    """`cmta tile --batch` (tiling.slides_per_job > 1): a slide that is not one gets its own
    failed status; with --on-error fail the command stops there (exit 2) after writing the
    slides before it, each as `cmta tile` of it alone would; a bad item is one line."""
    import json

    fake = tmp_path / "notes.svs"
    fake.write_text("this is not a slide\n" * 100)

    def item(name):
        return json.dumps({"slide": str(fake), "slide_id": name, "outdir": str(tmp_path / name),
                           "status": str(tmp_path / f"{name}.json"), "publish_dir": f"final/{name}"})

    rc, err = _run_cli(["tile", "--batch", item("a"), "--batch", item("b"), "--on-error", "skip"], capsys)
    assert rc == 0, err
    for name in "ab":
        status = json.loads((tmp_path / f"{name}.json").read_text())
        assert status["status"] == "failed" and "not a slide" in status["reason"]
        assert (tmp_path / name).is_dir() and not list((tmp_path / name).iterdir())
    (tmp_path / "b.json").unlink()
    rc, err = _run_cli(["tile", "--batch", item("a"), "--batch", item("b")], capsys)
    assert rc == 2 and not (tmp_path / "b.json").exists(), err  # stopped at the first
    bad = json.dumps({"slide": str(fake), "outdir": "x", "status": "y", "colour": "red"})
    for args, cause in ((["--batch", bad], "unknown key 'colour'"),
                        (["--batch", "{"], "not JSON"), ([], "give one slide file or --batch"),
                        ([str(fake), "--batch", item("a")], "not both")):
        rc, err = _run_cli(["tile", *args], capsys)
        assert rc == 2 and len([l for l in err if "error:" in l]) == 1 and cause in err[-1], err
