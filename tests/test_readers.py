"""The readers of `cmta extract` (features.reader): OpenSlide's pixels from JPEG tiles read
directly, PIL's resize on the device, the GPU-decode path's bytes (decoded on the CPU
here), the fall-backs to OpenSlide, items joined into batches, the read timeout, and the
features of the default reader against OpenSlide's on a real slide."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _feature_helpers import write_grid_coords
from PIL import Image

from cmta_pipeline.errors import CMTAError
from cmta_pipeline.features import readers as readers_mod
from cmta_pipeline.features.batches import make_loader, model_batches
from cmta_pipeline.features.patches import PatchBatches, load_patch_grid, open_slide
from cmta_pipeline.features.readers import TileStreams, choose_reader, make_dataset
from cmta_pipeline.features.resize import pil_filter, resize_batch

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- PIL's resize in torch


@pytest.mark.parametrize("size,n,clam", [(512, 224, False), (507, 224, False), (257, 224, False),
                                         (1024, 224, False), (200, 224, False), (300, 224, True),
                                         (224, 224, False)])
def test_device_resize_is_pils_bytes(size, n, clam):
    rng = np.random.default_rng(size)
    px = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    px[1] = np.clip(rng.normal(128, 70, (size, size, 3)), 0, 255)  # smooth-ish, clipped
    flt = pil_filter(size, n, clam)
    want = np.stack([np.asarray(Image.fromarray(p).resize(
        (n, n), Image.BILINEAR if flt == "bilinear" else Image.BOX)) if flt else p for p in px])
    got = resize_batch(torch.from_numpy(px), n, flt).numpy()
    assert np.array_equal(got, want)
    if flt == "box" and size % n:
        # the comparison can fail: torch's own area resize is another filter
        area = torch.nn.functional.interpolate(torch.from_numpy(px).permute(0, 3, 1, 2).float(),
                                               size=(n, n), mode="area")
        area = area.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        assert not np.array_equal(area, want)


# ---------------------------------------------------------------- pixels of each reader


def _pixels(dataset, n, item=7, batch=16, workers=0):
    """Pixels (as the encoder gets them, here on the CPU) and ok flags of rows 0..n-1."""
    loader = make_loader(dataset, 0, n, batch, item, workers, CPU)
    batches = list(model_batches(loader, dataset, CPU, batch, "test"))
    assert all(len(b["index"]) == batch for b, _ in batches[:-1])  # joined to the model's batch
    return (torch.cat([b["pixels"] for b, _ in batches]).numpy(),
            np.concatenate([b["ok"] for b, _ in batches]))


def _every_reader(slide, grid, n, read_at="coords", input_px=224):
    """reader -> pixels of the first n patches; openslide is the reference."""
    level0 = read_at == "level0"
    level = 0 if level0 else grid.patch_level
    size = grid.patch_size_level0 if level0 else grid.patch_size
    choice = choose_reader("tiles", slide, level, size, input_px, cuda=False)
    out = {"openslide": _pixels(PatchBatches(slide, grid, input_px, read_at), n)}
    out["tiles"] = _pixels(make_dataset(choice, slide, grid, input_px, read_at, False), n)
    out["tiles, resized on the device"] = _pixels(
        make_dataset(choice, slide, grid, input_px, read_at, True), n, workers=1)
    if choice.layout is not None:  # nvjpeg's byte path, decoded by torchvision on the CPU
        out["nvjpeg bytes"] = _pixels(TileStreams(slide, grid, input_px, read_at,
                                                  choice.layout), n)
    return choice, out


def test_tile_readers_give_openslides_pixels_on_real_slides(slides_dir, tmp_path):
    """CMU-1 (Aperio: JPEGTables, RGB-coded tiles that libjpeg alone would take for YCbCr)
    on a full 257 px grid and at CLAM's level0 read; openslide-small-synthetic.svs with
    patches past its edges and at negative coordinates."""
    cmu = slides_dir / "CMU-1-Small-Region.svs"
    grid = load_patch_grid(write_grid_coords(cmu, tmp_path / "c.h5", size0=257), open_slide(cmu))
    for read_at in ("coords", "level0"):
        choice, px = _every_reader(cmu, grid, 40, read_at)
        assert choice.name == "tiles" and "aperio level 0" in choice.note
        ref, ok = px.pop("openslide")
        assert ok.all() and ref.std() > 10
        for name, (got, ok) in px.items():
            assert ok.all() and np.array_equal(got, ref), (read_at, name)
    small = slides_dir / "openslide-small-synthetic.svs"
    coords = write_grid_coords(small, tmp_path / "s.h5", size0=8)
    with h5py.File(coords, "r+") as f:  # corners, past the edges, negative
        d = f["coords"]
        attrs = dict(d.attrs)
        del f["coords"]
        d = f.create_dataset("coords", data=np.array([[0, 0], [-3, -5], [10, 12], [12, -2]]))
        for k, v in attrs.items():
            d.attrs[k] = v
    grid = load_patch_grid(coords, open_slide(small))
    _, px = _every_reader(small, grid, 4, input_px=16)
    ref, _ = px.pop("openslide")
    for name, (got, _) in px.items():
        assert np.array_equal(got, ref), name


def _tiff(path, img, tile=64, levels=(1,), **kw):
    import tifffile

    with tifffile.TiffWriter(path) as tw:
        for i, ds in enumerate(levels):
            tw.write(img[::ds, ::ds], tile=(tile, tile), photometric="rgb",
                     subfiletype=0 if i == 0 else 1, **kw)
    return path


def _grid(slide, tmp_path, coords, level=0, size=64):
    import openslide

    s = openslide.OpenSlide(str(slide))
    out = tmp_path / f"{Path(slide).stem}.{level}.coords.h5"
    with h5py.File(out, "w") as f:
        d = f.create_dataset("coords", data=np.asarray(coords, np.int64))
        d.attrs.update(patch_level=level, patch_size=size,
                       patch_size_level0=int(round(size * s.level_downsamples[level])))
    return load_patch_grid(out, s)


def test_edges_levels_and_colour_markers(tmp_path):
    """Odd-sized JPEG TIFF (partial edge tiles), patches across and past the edges and at
    negative coordinates; a level of downsample 2 read at whole-pixel origins (exact) and
    at half-pixel ones (read by OpenSlide); RGB-coded tiles with a JFIF marker (which
    would make libjpeg take them for YCbCr)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:258, 0:390]
    img = np.stack([128 + 60 * np.sin(xx / 7), 128 + 60 * np.cos(yy / 5),
                    128 + 50 * np.sin((xx + yy) / 11)], -1) + rng.normal(0, 8, (258, 390, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    ycc = _tiff(tmp_path / "ycc.tif", img[:257, :389], compression="jpeg")
    edge = [[0, 0], [350, 220], [-20, 30], [100, -40], [380, 250], [64, 64], [17, 203]]
    grid = _grid(ycc, tmp_path, edge)
    _, px = _every_reader(ycc, grid, len(edge), input_px=48)
    ref, _ = px.pop("openslide")
    for name, (got, _) in px.items():
        assert np.array_equal(got, ref), name
    lv = _tiff(tmp_path / "levels.tif", img[:256, :384], levels=(1, 2), compression="jpeg")
    grid = _grid(lv, tmp_path, [[0, 0], [64, 128], [2, 4], [1, 3], [318, 190]], level=1,
                 size=32)
    _, px = _every_reader(lv, grid, 5, input_px=24)
    ref, _ = px.pop("openslide")
    for name, (got, _) in px.items():
        assert np.array_equal(got, ref), name
    jfif = _rgb_jpeg_tiff_with_jfif(tmp_path / "rgbjfif.tif", img[:256, :384])
    grid = _grid(jfif, tmp_path, [[0, 0], [100, 70], [330, 200]])
    choice, px = _every_reader(jfif, grid, 3, input_px=48)
    assert choice.name == "tiles"
    ref, _ = px.pop("openslide")
    for name, (got, _) in px.items():
        assert np.array_equal(got, ref), name


def _rgb_jpeg_tiff_with_jfif(path, img, tile=64):
    import imagecodecs
    import tifffile

    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    tiles = []
    for ty in range(0, img.shape[0], tile):
        for tx in range(0, img.shape[1], tile):
            t = np.zeros((tile, tile, 3), np.uint8)
            blk = img[ty:ty + tile, tx:tx + tile]
            t[:blk.shape[0], :blk.shape[1]] = blk
            enc = imagecodecs.jpeg8_encode(t, level=90, colorspace="RGB", outcolorspace="RGB")
            tiles.append(enc if enc[2:4] == b"\xff\xe0" else enc[:2] + app0 + enc[2:])
    with tifffile.TiffWriter(path) as tw:
        tw.write(iter(tiles), shape=img.shape, dtype=np.uint8, tile=(tile, tile),
                 compression="jpeg", photometric="rgb")
    return path


# ---------------------------------------------------------------- fall-backs to OpenSlide


def test_formats_not_covered_are_read_by_openslide(slides_dir, tmp_path):
    import tifffile

    lzw = tmp_path / "lzw.tif"
    tifffile.imwrite(lzw, np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8),
                     tile=(64, 64), compression="lzw", photometric="rgb")
    cases = {lzw: "only 8-bit 3-sample contiguous JPEG",
             slides_dir / "ndpi-fluorescence-40x.ndpi": "'hamamatsu' is not a plain tiled TIFF",
             slides_dir / "camelyon-lowres-jpeg.dcm": "'dicom' is not a plain tiled TIFF"}
    for slide, why in cases.items():
        choice = choose_reader("auto", slide, 0, 64, 64, cuda=False)
        assert choice.name == "openslide" and why in choice.note, choice.note
        grid = _grid(slide, tmp_path, [[0, 0], [64, 32]])
        ds = make_dataset(choice, slide, grid, 48, "coords", False)
        assert isinstance(ds, PatchBatches) and ds.reader == "openslide"


def test_missing_decoder_falls_back_with_a_log_line(slides_dir, monkeypatch, caplog):
    cmu = slides_dir / "CMU-1-Small-Region.svs"
    monkeypatch.setattr(readers_mod, "jpeg_tiles_missing",
                        lambda: "simplejpeg (ImportError: No module named 'simplejpeg')")
    with caplog.at_level("WARNING"):
        choice = choose_reader("auto", cmu, 0, 257, 224, cuda=False)
    assert choice.name == "openslide" and "simplejpeg" in choice.note
    assert "reading through OpenSlide" in caplog.text and "simplejpeg" in caplog.text


def test_reader_names_and_nvjpeg_needs_cuda(slides_dir):
    cmu = slides_dir / "CMU-1-Small-Region.svs"
    with pytest.raises(CMTAError, match="--reader nvjpeg decodes on the GPU"):
        choose_reader("nvjpeg", cmu, 0, 257, 224, cuda=False)
    with pytest.raises(CMTAError, match="--reader pillow: use one of auto, openslide"):
        choose_reader("pillow", cmu, 0, 257, 224, cuda=False)
    assert choose_reader("openslide", cmu, 0, 257, 224, cuda=False).name == "openslide"
    # half-size decoding needs patches at least twice the input: else full size
    assert choose_reader("tiles-half", cmu, 0, 257, 224, cuda=False).name == "tiles"
    assert choose_reader("tiles-half", cmu, 0, 512, 224, cuda=False).name == "tiles-half"


def test_undecodable_tile_is_read_by_openslide_which_names_it(tmp_path):
    from _feature_helpers import write_tiled_tiff

    slide = write_tiled_tiff(tmp_path / "bad.tiff", shape=(512, 512), corrupt_tile=1)
    grid = load_patch_grid(write_grid_coords(slide, tmp_path / "b.h5"), open_slide(slide))
    choice = choose_reader("auto", slide, 0, 256, 224, cuda=False)
    for ds in (make_dataset(choice, slide, grid, 224, "coords", False),
               TileStreams(slide, grid, 224, "coords", choice.layout)):
        px, ok = _pixels(ds, 4, item=2, batch=4)
        assert ok.tolist() == [True, False, True, True]
        ref = PatchBatches(slide, grid, 224)[[0, 2, 3]]["pixels"]
        assert np.array_equal(px[[0, 2, 3]], ref)


# ---------------------------------------------------------------- the loop's reading side


class _Stuck(torch.utils.data.Dataset):
    input_px, size, filter = 4, 4, None

    def __len__(self):
        return 4

    def __getitem__(self, idx):
        time.sleep(30)


def test_a_stuck_reader_is_an_error_naming_the_slide():
    loader = make_loader(_Stuck(), 0, 4, 4, 2, 1, CPU, timeout_s=2)
    with pytest.raises(CMTAError, match="slow.svs: no patches from the reader processes"):
        list(model_batches(loader, _Stuck(), CPU, 4, "slow.svs"))


def test_items_never_straddle_two_model_batches():
    loader = make_loader(_Stuck(), 3, 50, 16, 5, 0, CPU)
    items = list(loader.sampler)
    assert sum(items, []) == list(range(3, 50))
    starts = set(range(3, 50, 16))
    for it in items:
        assert len(it) <= 5 and not any(i in starts for i in it[1:])


# ---------------------------------------------------------------- features: default vs OpenSlide


def _extract(slide, coords, out, weights, reader):
    r = subprocess.run([sys.executable, "-m", "cmta_pipeline", "extract", str(slide),
                        str(coords), "-o", str(out), "--weights", str(weights), "--device",
                        "cpu", "--threads", "2", "--workers", "1", "--no-progress"]
                       + (["--reader", reader] if reader else []),
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    with h5py.File(next(Path(out).glob("*.features.h5"))) as f:
        return f["features"][()], f.attrs["reader"]


def _agreement(a, b) -> tuple[float, float]:
    cos = torch.nn.functional.cosine_similarity(torch.from_numpy(a).double(),
                                                torch.from_numpy(b).double(), dim=1)
    return float(cos.min()), float(cos.median())


@pytest.mark.slow
def test_default_reader_features_agree_with_openslide(slides_dir, tmp_path):
    """`cmta extract` with seeded random weights on CMU-1-Small-Region (the slide stage's own
    grid), the default reader against `--reader openslide`: per-patch cosine >= 0.999 (min)
    and >= 0.9999 (median). The weights are `random` with BatchNorm statistics calibrated
    on the slide's patches: uncalibrated, different patches have cosine 0.9997 and nothing
    could fail. Negative control through the same commands: `--reader tiles-half` on 512 px
    patches (decoded at half size, resized twice) must fail the bound."""
    from cmta_pipeline.features import build_encoder
    from cmta_pipeline.features.encoder import IMAGENET_MEAN, IMAGENET_STD, calibrate_batchnorm

    cmu = slides_dir / "CMU-1-Small-Region.svs"
    subprocess.run([sys.executable, "-m", "cmta_pipeline", "tile", str(cmu), "-o",
                    str(tmp_path / "tiles"), "--preset", "biopsy"], cwd=REPO, check=True,
                   capture_output=True, timeout=300)
    coords = tmp_path / "tiles" / "CMU-1-Small-Region.coords.h5"
    model, _ = build_encoder("random")
    grid = load_patch_grid(coords, open_slide(cmu))
    px = torch.from_numpy(PatchBatches(cmu, grid, 224)[list(range(len(grid.coords)))]["pixels"])
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    calibrate_batchnorm(model, (px.permute(0, 3, 1, 2).float() / 255 - mean) / std)
    weights = tmp_path / "random_calibrated.pth"
    torch.save(model.state_dict(), weights)

    default, used = _extract(cmu, coords, tmp_path / "default", weights, None)
    reference, used_ref = _extract(cmu, coords, tmp_path / "openslide", weights, "openslide")
    assert (used, used_ref) == ("tiles", "openslide") and len(default) == 31
    lo, med = _agreement(default, reference)
    assert lo >= 0.999 and med >= 0.9999, (lo, med)
    # the yardstick: different patches are far apart with these weights
    assert _agreement(reference, np.roll(reference, 1, axis=0))[1] < 0.999

    big = write_grid_coords(cmu, tmp_path / "big.coords.h5", size0=512)
    half, used_half = _extract(cmu, big, tmp_path / "half", weights, "tiles-half")
    exact, _ = _extract(cmu, big, tmp_path / "exact", weights, "openslide")
    assert used_half == "tiles-half"
    lo, med = _agreement(half, exact)
    assert not (lo >= 0.999 and med >= 0.9999), (lo, med)


@pytest.mark.slow
def test_the_gpu_reading_paths_emulated_on_the_cpu(slides_dir, tmp_path, monkeypatch):
    """`cmta extract`'s loop as it runs on CUDA, with the CPU standing in for the GPU: the
    `tiles` readers hand over patches as read and the device resizes them; `nvjpeg` readers
    hand over tile bytes and the device decodes (here torchvision's CPU decoder), pastes and
    resizes. Both give the OpenSlide reader's features exactly, and say so in the file."""
    from cmta_pipeline.features import ExtractOptions, build_encoder, extract_features, settings

    cmu = slides_dir / "CMU-1-Small-Region.svs"
    coords = write_grid_coords(cmu, tmp_path / "c.h5", size0=257, n=24)
    model, info = build_encoder("random")

    def run(reader):
        opts = ExtractOptions(weights="random", device="cpu", batch_size=10, workers=2,
                              threads=1, reader=reader, progress=False, compile="off")
        return extract_features(cmu, coords, opts, model=model, info=info)

    ref, _, meta = run("openslide")
    assert meta["reader"] == "openslide"
    real_plan = settings.reading_plan

    def as_on_cuda(device, opts, input_px, reader, read_px):
        plan, _ = real_plan(device, opts, input_px, reader, read_px)
        return plan, reader in ("tiles", "nvjpeg")

    from cmta_pipeline.features import encode

    monkeypatch.setattr(encode, "reading_plan", as_on_cuda)
    monkeypatch.setattr(readers_mod, "check_reader", lambda asked, cuda: None)
    for reader in ("tiles", "nvjpeg"):
        feats, _, meta = run(reader)
        assert meta["reader"] == reader and np.array_equal(feats, ref), reader
