"""Precision as TRIDENT runs the encoders: the registry's precision under torch.autocast
(the model itself stays fp32), a finite check on every batch, a drift check against fp32
on patches spread over the whole slide (recorded in the feature file, refused beyond its
tolerance), and GigaPath's centre crop. A small convolutional encoder stands in for the
real ones (speed); the code path is `extract_features`'."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _feature_helpers import write_grid_coords
from torch import nn

from cmta_pipeline.errors import CMTAError
from cmta_pipeline.features import ExtractOptions, extract_features
from cmta_pipeline.features import encode as encode_mod
from cmta_pipeline.features.encoder import EncoderInfo
from cmta_pipeline.features.encoders import REGISTRY, get_spec
from cmta_pipeline.features.runner import EncoderRunner
from cmta_pipeline.features.settings import resolve_precision

N = 8


class Tiny(nn.Module):
    """(B, 3, 64, 64) -> (B, 16); records the dtype its convolution ran in and its
    weights' dtype; ``nan_call``/``nan_row``: that row of that call's output is NaN."""

    def __init__(self, nan_call: int | None = None, nan_row: int = 0):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 8, stride=8)
        self.norm = nn.LayerNorm(16)
        self.calls, self.seen = 0, set()
        self.nan_call, self.nan_row = nan_call, nan_row

    def forward(self, x):
        y = self.conv(x)
        self.seen.add((y.dtype, self.conv.weight.dtype))
        out = self.norm(y.float().mean((2, 3)).to(y.dtype)).float()
        self.calls += 1
        if self.calls == self.nan_call:
            out = out.clone()
            out[self.nan_row] = float("nan")
        return out


INFO = EncoderInfo("tiny", "random", "", dim=16, normalisation="imagenet", input_px=None)


@pytest.fixture(scope="session")
def slide_coords(slides_dir, tmp_path_factory):
    slide = slides_dir / "CMU-1-Small-Region.svs"
    out = tmp_path_factory.mktemp("prec") / "cmu.coords.h5"
    return slide, write_grid_coords(slide, out, n=N, size0=256, input_px=64, slide_id="cmu")


def _opts(**kw):
    base = dict(weights="random", device="cpu", batch_size=4, workers=0, precision="fp32",
                threads=2, progress=False, compile="off", check_patches=3)
    base.update(kw)
    return ExtractOptions(**base)


def test_registry_precision_is_tridents():
    fp32 = {"conch_v1", "ctranspath", "phikon", "phikon_v2", "lunit-vits8", "resnet50",
            "kaiko-vits16", "kaiko-vits8", "kaiko-vitb16", "kaiko-vitb8", "kaiko-vitl14"}
    for name, spec in REGISTRY.items():
        want = "fp32" if name in fp32 else "bf16" if name == "uni_v2" else "fp16"
        assert spec.precision == want, name
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_precision("auto", cuda, get_spec("uni_v2").precision) == "bf16"
    assert resolve_precision("auto", cuda, get_spec("conch_v1").precision) == "fp32"
    assert resolve_precision("auto", cuda, get_spec("uni_v1").precision) == "fp16"
    assert resolve_precision("auto", cpu, "fp16") == "fp32"  # CPU: fp32


def test_reduced_precision_is_autocast_never_a_cast_model(slide_coords):
    model = Tiny()
    pixels = torch.randint(0, 255, (2, 64, 64, 3), dtype=torch.uint8)
    fp32 = EncoderRunner(model, torch.device("cpu"), "fp32")(pixels)
    assert model.seen == {(torch.float32, torch.float32)}
    bf16 = EncoderRunner(model, torch.device("cpu"), "bf16")(pixels)
    assert (torch.bfloat16, torch.float32) in model.seen  # ran in bf16, weights fp32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not torch.equal(fp32, bf16) and bf16.dtype == torch.float32


def test_a_non_finite_feature_stops_the_slide_naming_the_patch(slide_coords):
    slide, coords = slide_coords
    feats, _, meta = extract_features(slide, coords, _opts(), model=Tiny(), info=INFO)
    assert feats.shape == (N, 16) and np.isfinite(feats).all()  # the negative control
    assert meta["drift_patches"] == 0 and meta["drift_max_rel_error"] == -1.0  # fp32 eager
    with pytest.raises(CMTAError) as err:  # second batch of 4, its row 1: patch #5
        extract_features(slide, coords, _opts(), model=Tiny(nan_call=2, nan_row=1),
                         info=INFO)
    msg = str(err.value)
    assert "\n" not in msg and "CMU-1-Small-Region.svs" in msg and "patch #5" in msg


def test_drift_against_fp32_across_the_slide_recorded_and_refused(slide_coords,
                                                                   monkeypatch):
    slide, coords = slide_coords
    checked = []
    rows = encode_mod.sink_rows
    monkeypatch.setattr(encode_mod, "sink_rows",
                        lambda sink, index: checked.append(list(index)) or rows(sink, index))
    feats, _, meta = extract_features(slide, coords, _opts(precision="bf16"), model=Tiny(),
                                      info=INFO)
    assert meta["precision"] == "bf16"
    assert checked == [[0, 4, N - 1]]  # spread over the slide, not its first batch
    assert meta["drift_patches"] == 3
    assert 0 < meta["drift_max_rel_error"] <= encode_mod.DRIFT_TOLERANCE["bf16"]
    assert 0 < meta["drift_mean_rel_error"] <= meta["drift_max_rel_error"]
    ref, _, _ = extract_features(slide, coords, _opts(), model=Tiny(), info=INFO)
    rel = np.linalg.norm(feats - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert meta["drift_max_rel_error"] == pytest.approx(rel[[0, 4, N - 1]].max(), rel=1e-3)
    monkeypatch.setitem(encode_mod.DRIFT_TOLERANCE, "bf16", 1e-9)
    with pytest.raises(CMTAError, match=r"CMU-1.*bf16 features differ from fp32 by .*patch #"):
        extract_features(slide, coords, _opts(precision="bf16"), model=Tiny(), info=INFO)


def test_gigapath_centre_crop_and_its_input_side():
    """resize 256, centre crop 224 (torchvision's offset: 16) before the network."""
    model = Tiny()
    px = torch.randint(0, 255, (2, 256, 256, 3), dtype=torch.uint8)
    cropped = EncoderRunner(model, torch.device("cpu"), "fp32", crop=224)(px)
    assert torch.equal(cropped, EncoderRunner(model, torch.device("cpu"), "fp32")(
        px[:, 16:240, 16:240].contiguous()))
    assert not torch.equal(cropped, EncoderRunner(model, torch.device("cpu"), "fp32")(
        px[:, 15:239, 15:239].contiguous()))
    spec = get_spec("gigapath")
    assert (spec.fov_um, spec.read_px, spec.input_px, spec.seen_um) == (128, 256, 224, 112)
    info = EncoderInfo("gigapath", "random", "", 1536, input_px=224, resize_px=256)
    assert encode_mod.encoder_input_px(ExtractOptions(), None, info) == 256
    assert encode_mod.crop_px(info) == 224
    assert "resize 256 -> centre crop 224 (112 um)" in spec.pixel_path()


def test_ctranspath_is_256_px_at_10x():
    spec = get_spec("ctranspath")
    assert (spec.mpp, spec.patch_px, spec.fov_um, spec.input_px) == (1.0, 256, 256, 224)
    assert spec.magnification == "10x" and spec.geometry() == "fov256um_in224"


def test_extract_crops_the_centre_when_the_encoder_asks(slide_coords):
    """An encoder that takes 56 px after resizing to 64 (GigaPath: 224 after 256): the
    patches are read at 64, the network sees their centre 56, the file says so."""
    slide, coords = slide_coords
    info = EncoderInfo("tiny", "random", "", dim=16, normalisation="imagenet", input_px=56,
                       resize_px=64)
    feats, _, meta = extract_features(slide, coords, _opts(), model=Tiny(), info=info)
    assert meta["input_px"] == 64 and meta["crop_px"] == 56
    whole, _, meta64 = extract_features(slide, coords, _opts(), model=Tiny(), info=INFO)
    assert meta64["crop_px"] == 0 and not np.allclose(feats, whole)


def test_cmta_encoders_shows_the_pixel_path(capsys):
    from cmta_pipeline.cli import main

    assert main(["encoders"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "128 um = 256 px at 0.5 um/px (20x) -> resize 256 -> centre crop 224 (112 um)" \
        in rows["gigapath"]
    assert "256 um = 256 px at 1 um/px (10x) -> resize 224 -> 224 px in" in rows["ctranspath"]
    assert "fp32" in rows["resnet50"] and "bf16" in rows["uni_v2"]
