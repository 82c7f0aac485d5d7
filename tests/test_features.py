"""Patch features (cmta extract): encoder, parallel reading, precision, outputs, bad input."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _feature_helpers import write_grid_coords, write_tiled_tiff

from cmta_pipeline.errors import CMTAError
from cmta_pipeline.features import (
    ExtractOptions,
    PatchBatches,
    ResNet50Trunc,
    build_encoder,
    extract_features,
    extract_slide,
    fetch_imagenet_weights,
    load_patch_grid,
)
from cmta_pipeline.features import settings as extract_mod
from cmta_pipeline.features.encoder import IMAGENET_MEAN, IMAGENET_STD, calibrate_batchnorm
from cmta_pipeline.features.files import load_features
from cmta_pipeline.features.patches import open_slide
from cmta_pipeline.features.runner import EncoderRunner

REPO = Path(__file__).resolve().parents[1]
N_PATCHES = 31  # what `cmta tile --preset biopsy` finds on CMU-1-Small-Region


@pytest.fixture(scope="session")
def cmu(slides_dir):
    return slides_dir / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def cmu_coords(cmu, tmp_path_factory):
    """The slide stage's own coords file (`cmta tile`, biopsy preset: 31 patches of 257 px)."""
    out = tmp_path_factory.mktemp("tiles")
    r = subprocess.run([sys.executable, "-m", "cmta_pipeline", "tile", str(cmu), "-o", str(out),
                        "--preset", "biopsy"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    path = out / "CMU-1-Small-Region.coords.h5"
    with h5py.File(path) as f:
        assert len(f["coords"]) == N_PATCHES and f["coords"].attrs["patch_size"] == 257
    return path


@pytest.fixture(scope="session")
def encoder():
    return build_encoder("random")


def _opts(**kw):
    base = dict(weights="random", device="cpu", batch_size=8, workers=0, precision="fp32",
                threads=2, progress=False)
    base.update(kw)
    return ExtractOptions(**base)


def _reference_features(model, slide_path, coords, size0, input_px=224):
    """Patch by patch, the obvious way: OpenSlide read, RGB, area resize, normalise, model."""
    import openslide
    from PIL import Image

    s = openslide.OpenSlide(str(slide_path))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for x, y in coords:
        img = s.read_region((int(x), int(y)), 0, (size0, size0)).convert("RGB")
        rgb = np.asarray(img.resize((input_px, input_px), Image.BOX))
        t = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            out.append(model((t - mean) / std))
    return torch.cat(out).numpy()


# ---------------------------------------------------------------- encoder and weights


def test_encoder_is_resnet50_through_layer3():
    from torchvision.models import resnet50

    enc = ResNet50Trunc()
    assert [len(enc.layer1), len(enc.layer2), len(enc.layer3)] == [3, 4, 6]
    assert not hasattr(enc, "layer4") and not hasattr(enc, "fc")
    full = resnet50(weights=None).state_dict()
    expected = {k for k in full if not k.startswith(("layer4.", "fc."))}
    assert set(enc.state_dict()) == expected
    assert enc.layer3[-1].conv3.out_channels == 1024
    with torch.inference_mode():
        y = enc.eval()(torch.zeros(2, 3, 64, 64))
    assert y.shape == (2, 1024)


def test_random_weights_are_seeded_and_recorded():
    a, info = build_encoder("random")
    b, _ = build_encoder("random")
    assert info.weights.startswith("random")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_local_state_dict_gives_same_features(tmp_path, encoder):
    """A saved state dict (truncated, or a full torchvision ResNet-50) reproduces the model."""
    from torchvision.models import resnet50

    model, _ = encoder
    torch.manual_seed(1)
    full = resnet50(weights=None)
    full.load_state_dict(model.state_dict(), strict=False)  # layer4/fc stay random
    for name, sd in (("trunc.pth", model.state_dict()), ("full.pth", full.state_dict())):
        torch.save(sd, tmp_path / name)
        loaded, info = build_encoder(str(tmp_path / name))
        assert info.weights == f"file:{name}" and len(info.weights_sha256) == 64
        x = torch.randn(2, 3, 96, 96)
        with torch.inference_mode():
            assert torch.equal(loaded(x), model(x))
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(CMTAError, match="bad.pth: not a ResNet-50 state dict"):
        build_encoder(str(tmp_path / "bad.pth"))
    with pytest.raises(CMTAError, match="no such file"):
        build_encoder(str(tmp_path / "missing.pth"))


def test_fetch_weights_from_mirror_checks_hash(tmp_path, monkeypatch, encoder):
    """fetch-weights saves the downloaded bytes (hash in the file name checked), atomically."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    torch.hub.set_dir(str(tmp_path / "hub"))
    model, _ = encoder
    src = tmp_path / "src.pth"
    torch.save(model.state_dict(), src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    good = tmp_path / f"resnet50-{sha[:8]}.pth"
    src.rename(good)
    out = tmp_path / "resources" / "weights" / "resnet50.pth"
    fetch_imagenet_weights(out, url=good.as_uri())
    loaded, _ = build_encoder(str(out))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
    wrong = tmp_path / "resnet50-deadbeef.pth"
    wrong.write_bytes(good.read_bytes())
    out2 = tmp_path / "w2.pth"
    with pytest.raises(CMTAError, match="does not start with the hash in its name"):
        fetch_imagenet_weights(out2, url=wrong.as_uri())
    assert out.read_bytes() == good.read_bytes()
    with pytest.raises(CMTAError, match="cannot download"):
        fetch_imagenet_weights(out2, url=(tmp_path / "resnet50-00000000.pth").as_uri())
    assert not out2.exists()


# ---------------------------------------------------------------- real slide


@pytest.mark.slow
def test_extract_real_slide(cmu, cmu_coords, tmp_path, encoder):
    model, info = encoder
    a = extract_slide(cmu, cmu_coords, tmp_path / "a", _opts(batch_size=5, workers=0),
                      model=model, info=info)
    feats = load_features(a.h5)
    assert feats.shape == (N_PATCHES, 1024) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    # .pt (what MCAT/CMTA load) equals the h5 features
    pt = torch.load(a.pt, weights_only=True)
    assert isinstance(pt, torch.Tensor) and np.array_equal(pt.numpy(), feats)
    with h5py.File(a.h5) as f:
        with h5py.File(cmu_coords) as c:
            assert np.array_equal(f["coords"][()], c["coords"][()])
        assert f["coords"].attrs["patch_level"] == 0 and f["coords"].attrs["patch_size"] == 257
        assert f.attrs["weights"] == "random(seed=0)"
        assert f.attrs["encoder"] == "resnet50_trunc" and f.attrs["input_px"] == 224
        assert f.attrs["precision"] == "fp32" and f.attrs["read_level"] == 0
        assert f.attrs["slide_id"] == "CMU-1-Small-Region"
    assert a.h5.name == "CMU-1-Small-Region.features.h5"
    # each row is its own patch: equal to a plain patch-by-patch computation (in order),
    # and different patches are far apart compared with the tolerance
    with h5py.File(cmu_coords) as c:
        coords = c["coords"][()]
    ref = _reference_features(model, cmu, coords[[0, 7]], 257)
    np.testing.assert_allclose(feats[[0, 7]], ref, rtol=0, atol=2e-3)
    assert np.abs(feats[0] - feats[7]).max() > 20 * 2e-3
    # deterministic across runs, and across batch sizes and reader processes
    b = extract_slide(cmu, cmu_coords, tmp_path / "b", _opts(batch_size=5, workers=0),
                      model=model, info=info)
    assert np.array_equal(load_features(b.h5), feats)
    c = extract_slide(cmu, cmu_coords, tmp_path / "c", _opts(batch_size=4, workers=2),
                      model=model, info=info)
    np.testing.assert_allclose(load_features(c.h5), feats, rtol=0, atol=2e-3)


def test_read_at_level0_gives_clam_pixels(cmu, cmu_coords):
    """--read-at level0: level-0 region, alpha dropped, PIL bilinear resize (CLAM's pixels)."""
    import openslide
    from PIL import Image

    slide = open_slide(cmu)
    grid = load_patch_grid(cmu_coords, slide)
    ds = PatchBatches(cmu, grid, 224, read_at="level0")
    x, y = grid.coords[3]
    clam = openslide.OpenSlide(str(cmu)).read_region((int(x), int(y)), 0, (257, 257))
    clam = np.asarray(clam.convert("RGB").resize((224, 224), Image.BILINEAR))
    batch = ds[[3, 4]]
    assert batch["ok"].all() and np.array_equal(batch["pixels"][0], clam)
    default = PatchBatches(cmu, grid, 224)[[3]]["pixels"][0]
    assert default.shape == (224, 224, 3) and not np.array_equal(default, clam)


@pytest.mark.slow
def test_bf16_cosine_check_decides(cmu, tmp_path):
    """bf16 is kept only if every checked patch has cosine >= 0.999 to its fp32 feature."""
    model = ResNet50Trunc()
    slide = open_slide(cmu)
    # 3 patches: bf16 is emulated (slow) on CPUs without AVX512-BF16
    coords = write_grid_coords(cmu, tmp_path / "three.coords.h5", n=3)
    grid = load_patch_grid(coords, slide)
    pixels = torch.from_numpy(PatchBatches(cmu, grid, 224)[[0, 1, 2]]["pixels"])
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    # real-looking activations: random weights alone map every patch to about the same vector
    calibrate_batchnorm(model, (pixels.permute(0, 3, 1, 2).float() / 255 - mean) / std)
    fp32 = EncoderRunner(model, torch.device("cpu"), "fp32")(pixels)
    bf16 = EncoderRunner(model, torch.device("cpu"), "bf16")(pixels)
    assert not torch.equal(fp32, bf16)  # it really ran in bf16
    # different patches are not near-parallel, so the check has teeth
    assert torch.nn.functional.cosine_similarity(fp32[0], fp32[1], dim=0) < 0.99
    min_cos = float(torch.nn.functional.cosine_similarity(fp32.double(), bf16.double(),
                                                          dim=1).min())
    assert 0.98 < min_cos < 1.0
    feats, _, meta = extract_features(
        cmu, coords, _opts(precision="bf16", batch_size=3, check_patches=3),
        model=model, info=build_encoder("random")[1])
    assert meta["precision_check_min_cosine"] == pytest.approx(min_cos, abs=1e-4)
    assert meta["precision"] == ("bf16" if min_cos >= 0.999 else "fp32")
    if meta["precision"] == "fp32":  # fell back: the features are the fp32 ones
        np.testing.assert_allclose(feats, fp32.numpy(), rtol=0, atol=1e-3)


def test_default_batching_by_device(monkeypatch):
    from cmta_pipeline import compute

    monkeypatch.setattr(extract_mod, "available_cpus", lambda: 16)
    monkeypatch.setattr(compute, "shm_free_bytes", lambda path="/dev/shm": 64 * 1024**3)

    def sizes(*a):
        p = extract_mod.default_batching(*a)
        return p.batch_size, p.workers, p.item_patches

    assert sizes(torch.device("cpu"), None, None) == (32, 1, 32)
    assert sizes(torch.device("cuda"), None, None) == (256, 14, 32)  # items joined into 256
    assert sizes(torch.device("cuda"), 8, 0) == (8, 0, 8)
    with pytest.raises(CMTAError, match="--batch-size"):
        extract_mod.default_batching(torch.device("cpu"), 0, None)


def test_auto_precision_is_fp32_on_cpu():
    assert extract_mod.resolve_precision("auto", torch.device("cpu")) == "fp32"
    with pytest.raises(CMTAError, match="fp16 is for CUDA"):
        extract_mod.resolve_precision("fp16", torch.device("cpu"))


# ---------------------------------------------------------------- bad input


def test_bad_coords_files(cmu, cmu_coords, tmp_path, slides_dir):
    slide = open_slide(cmu)
    with pytest.raises(CMTAError, match="coords file not found"):
        load_patch_grid(tmp_path / "nope.coords.h5", slide)
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(CMTAError, match="garbage.h5: unreadable coords file"):
        load_patch_grid(tmp_path / "garbage.h5", slide)
    with h5py.File(tmp_path / "nods.h5", "w") as f:
        f.create_dataset("features", data=np.zeros((2, 2)))
    with pytest.raises(CMTAError, match="no dataset 'coords'"):
        load_patch_grid(tmp_path / "nods.h5", slide)
    empty = write_grid_coords(cmu, tmp_path / "empty.h5", n=0)
    with pytest.raises(CMTAError, match="empty.h5: no patches"):
        load_patch_grid(empty, slide)
    other = write_grid_coords(cmu, tmp_path / "other.h5", n=4,
                              level_dim=np.array([4000, 3000], dtype=np.int64))
    with pytest.raises(CMTAError, match="4000 x 3000 px but .* is 2220 x 2967"):
        load_patch_grid(other, slide)
    ndpi = open_slide(slides_dir / "ndpi-fluorescence-40x.ndpi")  # 3968 x 4864: far right
    far = write_grid_coords(slides_dir / "ndpi-fluorescence-40x.ndpi", tmp_path / "far.h5")
    with h5py.File(far, "r+") as f:  # a CLAM file: no level_dim to compare
        del f["coords"].attrs["level_dim"], f.attrs["level_dim"]
    load_patch_grid(far, ndpi)
    with pytest.raises(CMTAError, match="patches lie outside"):
        load_patch_grid(far, slide)


@pytest.mark.slow
def test_corrupt_tile_fails_or_is_skipped(tmp_path, encoder):
    """A tile that cannot be decoded: named error by default; skipped and counted if asked."""
    model, info = encoder
    slide = write_tiled_tiff(tmp_path / "bad.tiff", corrupt_tile=5)  # tile row 1, col 1
    coords = write_grid_coords(slide, tmp_path / "bad.coords.h5")  # 16 patches, #5 is bad
    out = tmp_path / "out"
    with pytest.raises(CMTAError, match=r"bad.tiff: patch #5 at level-0 \(256, 256\)"):
        extract_slide(slide, coords, out, _opts(batch_size=4, workers=1), model=model,
                      info=info)
    assert not out.exists() or not any(out.iterdir())  # nothing, not even a temp file
    res = extract_slide(slide, coords, out, _opts(batch_size=4, workers=1, on_error="skip"),
                        model=model, info=info)
    assert res.n_skipped == 1 and res.n_patches == 15
    with h5py.File(res.h5) as f:
        assert f["features"].shape == (15, 1024) and f.attrs["n_skipped"] == 1
        assert [256, 256] not in f["coords"][()].tolist()
        # patches after the bad one were read (the handle was reopened), none is zero
        assert np.abs(f["features"][()]).sum(axis=1).min() > 0
        assert len(f["coords"]) == 15 and f["coords"][-1].tolist() == [768, 768]


@pytest.mark.slow
def test_interrupted_write_leaves_no_output(cmu, cmu_coords, tmp_path, monkeypatch, encoder):
    """A run that dies while writing leaves no file a rerun would take as complete."""
    model, info = encoder
    real_file = h5py.File

    def dying_file(name, mode="r", *a, **k):
        if mode == "w":  # the features file, half-written
            f = real_file(name, mode, *a, **k)
            f.create_dataset("features", data=np.zeros((3, 1024), np.float32))
            f.close()
            raise KeyboardInterrupt
        return real_file(name, mode, *a, **k)

    monkeypatch.setattr(h5py, "File", dying_file)
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        extract_slide(cmu, cmu_coords, out, _opts(), model=model, info=info)
    left = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    # the .pt is written first, the .h5 (what marks a slide as done) last; a run that fails
    # between them removes the .pt too (fileio.fresh_outputs); the partial rows stay
    assert left == [], left
    assert sorted(p.name for p in out.iterdir()) == [".CMU-1-Small-Region.features.partial",
                                                     ".CMU-1-Small-Region.features.partial.json"]
    monkeypatch.setattr(h5py, "File", real_file)
    # every row was encoded: the rerun only writes the files, then removes the partial ones
    res = extract_slide(cmu, cmu_coords, out, _opts(), model=model, info=info)
    assert res.n_patches == N_PATCHES and res.stats["resumed_rows"] == N_PATCHES
    assert sorted(p.name for p in out.iterdir()) == ["CMU-1-Small-Region.features.h5",
                                                     "CMU-1-Small-Region.pt"]


@pytest.mark.slow
def test_cli_error_is_one_line(cmu, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "cmta_pipeline", "extract", str(cmu),
         str(tmp_path / "missing.coords.h5"), "-o", str(tmp_path), "--weights", "random"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "missing.coords.h5: coords file not found" in r.stderr


def test_workflow_plans_fetch_weights_and_gpu(shared_data, tmp_path):
    """Dry run: imagenet weights come from rule fetch_weights; device cuda asks for gpu=1;
    a local run with one GPU runs GPU jobs one at a time; the reader is passed."""
    import os

    target = f"{tmp_path}/wf/features/CMU-1-Small-Region.features.h5"
    extra = tmp_path / "gpu.yaml"
    extra.write_text("features:\n  device: cuda\n  workers: 8\n  threads: 10\n")

    def dry_run(*args, env=None):
        r = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
             "-n", "-p", "--cores", "16", "--configfile", "config/examples/shared_slides.yaml",
             *args, "--config", f"outdir={tmp_path}/wf", "--", target],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={**os.environ, **(env or {})})
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout + r.stderr

    out = dry_run(str(extra), env={"CUDA_VISIBLE_DEVICES": "0"})
    assert "rule fetch_weights:" in out
    assert "--weights resources/weights/resnet50-0676ba61.pth" in out
    assert "gpu=1" in out
    assert "local run: jobs asking for a GPU run 1 at a time" in out
    line = next(x for x in out.splitlines() if "cmta_pipeline extract" in x)
    # a CUDA job: readers as configured, batch sized by cmta extract (256), no CPU threads
    assert "--device cuda" in line and "--workers 8" in line and "--reader auto" in line
    assert "--batch-size" not in line and "--threads" not in line
    # the defaults (device auto, a GPU asked for): no torch threads passed either; told
    # how many GPU jobs at a time: nothing added
    out = dry_run("--resources", "gpu=2", env={"CUDA_VISIBLE_DEVICES": "0"})
    line = next(x for x in out.splitlines() if "cmta_pipeline extract" in x)
    assert "--device auto" in line and "--threads" not in line
    assert "local run" not in out


@pytest.mark.slow
def test_readers_do_not_hang_after_opencv_in_parent(cmu, cmu_coords, tmp_path):
    """Forked readers must not touch OpenCV: its thread pool deadlocks in a forked child
    when the parent has used it (as a process that tiled first would have)."""
    code = f"""
import cv2, numpy as np
cv2.GaussianBlur(np.random.rand(2000, 2000).astype(np.float32), (0, 0), 6)
from cmta_pipeline.features import ExtractOptions, extract_slide
extract_slide({str(cmu)!r}, {str(cmu_coords)!r}, {str(tmp_path)!r},
              ExtractOptions(weights="random", device="cpu", workers=2, batch_size=16,
                             threads=1, progress=False))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "CMU-1-Small-Region.features.h5").is_file()


# ---------------------------------------------------------------- resume after a kill


def _small_slide(tmp_path, n=None):
    slide = write_tiled_tiff(tmp_path / "small.tiff", shape=(1024, 1280))
    return slide, write_grid_coords(slide, tmp_path / "small.coords.h5", n=n)  # 20 patches


def _files(outdir, sid="small"):
    return [(Path(outdir) / f"{sid}{ext}").read_bytes() for ext in (".features.h5", ".pt")]


@pytest.mark.slow
def test_killed_extraction_resumes_with_same_bytes(tmp_path):
    """SIGKILL after 2 of 5 batches: the rerun encodes only the rest, and both outputs are
    byte-identical to an uninterrupted run's."""
    slide, coords = _small_slide(tmp_path)
    args = ["--weights", "random", "--device", "cpu", "--batch-size", "4", "--workers", "0",
            "--threads", "1", "--input-px", "64", "--compile", "off"]
    base = [sys.executable, "-m", "cmta_pipeline", "extract", str(slide), str(coords)]
    r = subprocess.run(base + ["-o", str(tmp_path / "whole")] + args, cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    killed = tmp_path / "killed"
    code = f"""
import os, signal, sys
from cmta_pipeline.features import sinks
append = sinks.PartialFeatures.append
def dying(self, feats, failed):
    append(self, feats, failed)
    if self.rows == 8:
        os.kill(os.getpid(), signal.SIGKILL)
sinks.PartialFeatures.append = dying
from cmta_pipeline.cli import main
sys.exit(main(["extract", {str(slide)!r}, {str(coords)!r}, "-o", {str(killed)!r}] + {args!r}))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == -9, r.stderr
    assert not (killed / "small.features.h5").exists()
    partial = killed / ".small.features.partial"
    assert partial.stat().st_size == 8 * 1024 * 4
    r = subprocess.run(base + ["-o", str(killed)] + args, cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming after 8 of 20 patches" in r.stderr
    assert _files(killed) == _files(tmp_path / "whole")
    assert not partial.exists() and not (killed / ".small.features.partial.json").exists()


def test_resume_only_what_is_recorded_and_only_with_same_settings(tmp_path, monkeypatch,
                                                                  encoder):
    """Rows on disk beyond the recorded count are cut and redone; other settings restart."""
    from cmta_pipeline import fileio

    model, info = encoder
    slide, coords = _small_slide(tmp_path)
    opts = _opts(batch_size=4, input_px=64, threads=1)
    whole = extract_slide(slide, coords, tmp_path / "whole", opts, model=model, info=info)
    assert whole.stats["resumed_rows"] == 0
    real = fileio.write_text_atomic
    calls = []

    def dies_on_third_record(path, text):
        calls.append(path)
        if len(calls) == 3:  # batch 3's rows are on disk, the record still says 8
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(fileio, "write_text_atomic", dies_on_third_record)
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        extract_slide(slide, coords, out, opts, model=model, info=info)
    monkeypatch.setattr(fileio, "write_text_atomic", real)
    assert (out / ".small.features.partial").stat().st_size == 12 * 4096
    res = extract_slide(slide, coords, out, opts, model=model, info=info)
    assert res.stats["resumed_rows"] == 8
    assert _files(out) == _files(tmp_path / "whole")
    # a partial file from other settings (here the batch size) is not resumed
    monkeypatch.setattr(fileio, "write_text_atomic", dies_on_third_record)
    calls.clear()
    (out / "small.features.h5").unlink()
    with pytest.raises(KeyboardInterrupt):
        extract_slide(slide, coords, out, opts, model=model, info=info)
    monkeypatch.setattr(fileio, "write_text_atomic", real)
    res = extract_slide(slide, coords, out, _opts(batch_size=5, input_px=64, threads=1),
                        model=model, info=info)
    assert res.stats["resumed_rows"] == 0
    np.testing.assert_allclose(load_features(res.h5), load_features(whole.h5), atol=1e-4)


# ---------------------------------------------------------------- compiled encoder


def test_compile_auto_needs_enough_patches(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(extract_mod, "cpu_capability", lambda: "AVX2")
    assert extract_mod.resolve_compile("auto", cpu, 600, 512)
    assert extract_mod.resolve_compile("auto", cpu, 512) and not extract_mod.resolve_compile(
        "auto", torch.device("cuda"), 512)  # defaults by device
    # CUDA: auto never compiles until a measurement says it pays; on, or a threshold, does
    assert not extract_mod.resolve_compile("auto", torch.device("cuda"), 10**6)
    assert extract_mod.resolve_compile("on", torch.device("cuda"), 1)
    assert extract_mod.resolve_compile("auto", torch.device("cuda"), 5000, 4096)
    assert not extract_mod.resolve_compile("auto", cpu, 511, 512)
    assert extract_mod.resolve_compile("on", cpu, 1, 512)
    assert not extract_mod.resolve_compile("off", cpu, 10**6, 512)
    with pytest.raises(CMTAError, match="--compile fast"):
        extract_mod.resolve_compile("fast", cpu, 1, 512)
    # measured: on an AVX-512 CPU the compiled fp32 encoder is no faster; in bf16 it is
    monkeypatch.setattr(extract_mod, "cpu_capability", lambda: "AVX512")
    assert not extract_mod.resolve_compile("auto", cpu, 10**5, 512)
    assert extract_mod.resolve_compile("auto", cpu, 10**5, 512, precision="bf16")
    assert extract_mod.resolve_compile("on", cpu, 1, 512)


@pytest.mark.parametrize("broken", ["nan", "raises", "cannot_compile"])
def test_compiled_encoder_that_disagrees_falls_back_to_eager(tmp_path, monkeypatch, encoder,
                                                             caplog, broken):
    """A compiled encoder whose first batch is off (NaN included), that fails to run, or that
    cannot be built: one log line, and the slide's features are exactly eager fp32's."""
    model, info = encoder
    slide, coords = _small_slide(tmp_path, n=10)
    eager = extract_slide(slide, coords, tmp_path / "eager",
                          _opts(batch_size=4, input_px=64, compile="off"), model=model, info=info)

    def fake_compile(module, **kw):
        if broken == "cannot_compile":
            raise RuntimeError("no C++ compiler")

        def run(x):
            if broken == "raises":
                raise RuntimeError("inductor bug")
            return module(x) * float("nan")
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    res = extract_slide(slide, coords, tmp_path / "c",
                        _opts(batch_size=4, input_px=64, compile="on"), model=model, info=info)
    assert _files(tmp_path / "c")[1] == _files(tmp_path / "eager")[1]  # the .pt: same bytes
    assert res.stats["compiled"] is False or res.stats["compiled"] == 0
    assert res.stats["precision_fallback"]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, [r.message for r in warnings]
    assert eager.stats.get("precision_fallback") is None


@pytest.mark.slow
def test_compiled_encoder_matches_eager_and_fills_its_cache(tmp_path, encoder):
    """The real torch.compile (inductor, frozen weights), a padded last batch, its cache in
    the folder given: per-patch cosine >= 0.9999 to eager fp32 on the same patches."""
    model, info = encoder
    slide, coords = _small_slide(tmp_path, n=10)
    cache = tmp_path / "inductor"
    opts = dict(batch_size=4, input_px=64, threads=2)
    eager = extract_slide(slide, coords, tmp_path / "e", _opts(compile="off", **opts),
                          model=model, info=info)
    comp = extract_slide(slide, coords, tmp_path / "c",
                         _opts(compile="on", compile_cache=str(cache), **opts),
                         model=model, info=info)
    assert comp.stats["compiled"] and "precision_fallback" not in comp.stats
    a, b = load_features(eager.h5), load_features(comp.h5)
    cos = torch.nn.functional.cosine_similarity(torch.from_numpy(a).double(),
                                                torch.from_numpy(b).double(), dim=1)
    assert cos.min() >= 0.9999 and comp.min_cosine >= 0.9999
    assert not np.array_equal(a, b)  # it really is another computation
    assert any(cache.rglob("*")), "inductor wrote nothing into --compile-cache"


# ---------------------------------------------------------------- several slides, one process


@pytest.mark.slow
def test_several_slides_in_one_process_equal_one_per_process(tmp_path):
    """`cmta extract A a.coords B b.coords C c.coords`: one encoder for all; each slide's files
    are byte-identical to a run of its own, and a slide whose tiling failed (its tile status
    says so) gets empty files marked failed that no reader takes for features."""
    import json

    a, a_coords = _small_slide(tmp_path)
    b = write_tiled_tiff(tmp_path / "other.tiff", shape=(768, 1024), seed=3)
    b_coords = write_grid_coords(b, tmp_path / "other.coords.h5")
    ok = tmp_path / "ok.tile.json"
    ok.write_text(json.dumps({"status": "ok"}))
    bad = tmp_path / "bad.tile.json"
    bad.write_text(json.dumps({"status": "failed", "reason": "no tissue found"}))
    common = ["--weights", "random", "--device", "cpu", "--workers", "0", "--batch-size",
              "8", "--threads", "1", "--no-progress"]

    def cmta(*args):
        return subprocess.run([sys.executable, "-m", "cmta_pipeline", "extract", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=300)

    many, single = tmp_path / "many", tmp_path / "single"
    r = cmta(str(a), str(a_coords), str(b), str(b_coords), str(a), str(tmp_path / "none.h5"),
             "-o", str(many), "--slide-id", "A", "--slide-id", "B", "--slide-id", "C",
             "--tile-status", str(ok), "--tile-status", str(ok), "--tile-status", str(bad),
             *common)
    assert r.returncode == 0, r.stderr
    assert "slide 2 of 3 done" in r.stderr
    for sid, slide, coords in (("A", a, a_coords), ("B", b, b_coords)):
        r = cmta(str(slide), str(coords), "-o", str(single), "--slide-id", sid, *common)
        assert r.returncode == 0, r.stderr
        assert _files(many, sid) == _files(single, sid)
    assert _files(many, "A") != _files(many, "B")
    with h5py.File(many / "C.features.h5") as f:
        assert f.attrs["status"] == "failed" and f.attrs["reason"] == "no tissue found"
        assert f["features"].shape == (0, 1024)
    with pytest.raises(CMTAError, match="N > 0"):
        load_features(many / "C.pt")

    # pairs and per-slide options must line up: one line naming the problem
    r = cmta(str(a), str(a_coords), str(b), "-o", str(tmp_path / "x"), *common)
    assert r.returncode == 2 and "SLIDE COORDS pairs, got 3 paths" in r.stderr
    assert r.stderr.strip().count("\n") == 0
    r = cmta(str(a), str(a_coords), str(b), str(b_coords), "--slide-id", "A", "-o",
             str(tmp_path / "x"), *common)
    assert r.returncode == 2 and "--slide-id is given 1 times for 2 slides" in r.stderr
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


@pytest.mark.slow
def test_slides_of_one_process_share_one_encoder_runner(tmp_path, monkeypatch):
    """extract_slides builds (folds, and where on, compiles) the encoder once for all its
    slides: one runner for the two slides, besides the fp32 reference of checks."""
    from cmta_pipeline.features import SlideJob, extract_slides

    a, a_coords = _small_slide(tmp_path)
    built = []
    real_init = EncoderRunner.__init__

    def counting(self, *args, **kw):
        built.append(kw.get("pad_to"))
        real_init(self, *args, **kw)

    monkeypatch.setattr(EncoderRunner, "__init__", counting)
    jobs = [SlideJob(a, a_coords, "one"), SlideJob(a, a_coords, "two")]
    res = extract_slides(jobs, tmp_path / "out", _opts(compile="off"))
    assert [r.n_patches for r in res] == [20, 20]
    assert built == [8], built  # one runner (padded to the batch of 8), reused
    assert _files(tmp_path / "out", "one") != [] and (tmp_path / "out" / "two.pt").is_file()
