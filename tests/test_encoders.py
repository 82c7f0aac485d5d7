"""The encoder registry: every architecture builds (on the meta device: no memory, no
time) with its published parameter count and dimension; `cmta extract --encoder` with
random weights on a real slide for four families; weights files checked."""

from __future__ import annotations

import h5py
import pytest
import torch

from cmta_pipeline.errors import CMTAError
from cmta_pipeline.features.encoders import REGISTRY, get_spec
from cmta_pipeline.features.encoders.build import (
    build_architecture,
    build_named_encoder,
    load_weights,
    random_architecture,
)

#: published counts are rounded (1.1B) or leave out heads TRIDENT does not use (CONCH's
#: caption pooler): a built network within 5% of its published count passes
TOLERANCE = 0.05


def params_match(n_built: int, published_m: float) -> bool:
    return abs(n_built / 1e6 - published_m) <= TOLERANCE * published_m


def meta_model(name):
    with torch.device("meta"):
        return build_architecture(get_spec(name))


@pytest.mark.parametrize("name", list(REGISTRY))
def test_architecture_has_published_size_and_dim(name):
    spec = get_spec(name)
    model = meta_model(name)
    n = sum(p.numel() for p in model.parameters())
    assert params_match(n, spec.params_m), (name, n / 1e6, spec.params_m)
    x = torch.empty(2, 3, spec.input_px, spec.input_px, device="meta")
    assert tuple(model.eval()(x).shape) == (2, spec.dim)


def test_size_check_can_fail():
    n = sum(p.numel() for p in meta_model("uni_v1").parameters())
    assert params_match(n, 303.0)
    assert not params_match(n, 632.0)  # a ViT-H's count is not a ViT-L's


def test_registry_dims_and_geometry_match_trident():
    dims = {"resnet50": 1024, "uni_v1": 1024, "uni_v2": 1536, "conch_v1": 512,
            "conch_v15": 768, "virchow": 2560, "virchow2": 2560, "hoptimus0": 1536,
            "gigapath": 1536, "phikon": 768, "phikon_v2": 1024, "ctranspath": 768}
    for name, dim in dims.items():
        assert get_spec(name).dim == dim, name
    # UNI was trained on 256 px at 20x shown at 224: the default tiling's geometry
    assert get_spec("uni_v1").geometry() == get_spec("resnet50").geometry()
    assert get_spec("conch_v1").input_px == 448
    assert get_spec("conch_v1").geometry() != get_spec("resnet50").geometry()
    assert get_spec("resnet50_trunc").name == "resnet50"  # the name in our feature files


def test_unknown_encoder_is_one_line_error():
    with pytest.raises(CMTAError, match="unknown encoder 'uni3'.*cmta encoders"):
        get_spec("uni3")


def test_cmta_encoders_lists_every_encoder(capsys):
    from cmta_pipeline.cli import main

    assert main(["encoders", "--format", "tsv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out[1:]] == list(REGISTRY)


@pytest.mark.slow
def test_weights_file_loads_and_wrong_one_is_refused(tmp_path):
    model, _ = build_named_encoder("lunit-vits8", "random")
    path = tmp_path / "lunit.safetensors"  # the hub's format, timm's names
    from safetensors.torch import save_file

    save_file({k[len("trunk."):]: v for k, v in model.state_dict().items()}, str(path))
    loaded, info = build_named_encoder("lunit-vits8", str(path))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert info.weights == "file:lunit.safetensors" and len(info.weights_sha256) == 64
    other = tmp_path / "ctp.pth"
    torch.save({"model": build_named_encoder("ctranspath", "random")[0].state_dict()}, other)
    with pytest.raises(CMTAError, match="not lunit-vits8 weights"):
        build_named_encoder("lunit-vits8", str(other))


def test_conch_checkpoint_names_load():
    """CONCH's checkpoint is the whole CoCa model: its visual tower under ``visual.``."""
    spec = get_spec("conch_v1")
    src, _ = build_named_encoder("conch_v1", "random")
    state = {f"visual.{k}": v for k, v in src.state_dict().items()}
    state["text.token_embedding.weight"] = torch.zeros(3, 3)  # left out
    dst = random_architecture(spec)
    load_weights(spec, dst, state, "conch.bin")
    assert all(torch.equal(a, b) for a, b in zip(dst.state_dict().values(),
                                                  src.state_dict().values()))
    del state["visual.ln_contrast.weight"]
    with pytest.raises(CMTAError, match="ln_contrast.weight"):
        load_weights(spec, random_architecture(spec), state, "conch.bin")


@pytest.fixture(scope="session")
def two_patches(slides_dir, tmp_path_factory):
    from _feature_helpers import write_grid_coords

    out = tmp_path_factory.mktemp("enc") / "cmu.coords.h5"
    return slides_dir / "CMU-1-Small-Region.svs", write_grid_coords(
        slides_dir / "CMU-1-Small-Region.svs", out, n=2, size0=512, slide_id="cmu")


# a ViT-L, a ViT-H, a CONCH-style ViT-B at 448, a Swin
@pytest.mark.parametrize("name", ["uni_v1", "virchow2", "conch_v1", "ctranspath"])
@pytest.mark.slow
def test_cmta_extract_encoder_random_weights_on_real_slide(name, two_patches, tmp_path):
    from cmta_pipeline.cli import main

    slide, coords = two_patches
    assert main(["extract", str(slide), str(coords), "-o", str(tmp_path), "--encoder", name,
                 "--weights", "random", "--threads", "2", "--compile", "off"]) == 0
    spec = get_spec(name)
    with h5py.File(tmp_path / "cmu.features.h5") as f:
        feats = f["features"][()]
        assert feats.shape == (2, spec.dim)
        assert f.attrs["encoder"] == name and f.attrs["feature_dim"] == spec.dim
        assert f.attrs["input_px"] == spec.input_px
        assert f.attrs["normalisation"] == spec.normalisation
    assert torch.isfinite(torch.from_numpy(feats)).all()
    assert torch.load(tmp_path / "cmu.pt").shape == (2, spec.dim)


def test_extract_refuses_another_input_size(two_patches, tmp_path):
    from cmta_pipeline.features import ExtractOptions, extract_features

    slide, coords = two_patches
    with pytest.raises(CMTAError, match="conch_v1 takes 448 px"):
        extract_features(slide, coords, ExtractOptions(encoder="conch_v1", weights="random",
                                                       input_px=224))


def test_cmta_takes_the_width_of_virchow_features():
    from cmta_pipeline.models import build_model

    omic_sizes = [5, 6, 7, 8, 9, 10]
    model = build_model("cmta", omic_sizes, path_dim=2560).eval()
    bag = torch.randn(12, 2560)
    omics = [torch.randn(n) for n in omic_sizes]
    with torch.no_grad():
        out = model(bag, omics)
    assert torch.isfinite(out["risk"]).all()
    with pytest.raises(RuntimeError):  # 1024-d features do not fit a 2560-d model
        model(torch.randn(12, 1024), omics)


def test_phikon_hugging_face_names_load():
    """Phikon's hub file is a transformers ViTModel: query/key/value apart, other names."""
    spec = get_spec("phikon")
    src, _ = build_named_encoder("phikon", "random")
    own = {k[len("trunk."):]: v for k, v in src.state_dict().items()}
    hf = {"embeddings.cls_token": own["cls_token"],
          "embeddings.position_embeddings": own["pos_embed"],
          "embeddings.patch_embeddings.projection.weight": own["patch_embed.proj.weight"],
          "embeddings.patch_embeddings.projection.bias": own["patch_embed.proj.bias"],
          "layernorm.weight": own["norm.weight"], "layernorm.bias": own["norm.bias"]}
    for i in range(12):
        p, q = f"encoder.layer.{i}.", f"blocks.{i}."
        for t in ("weight", "bias"):
            for part, x in zip(("query", "key", "value"), own[q + f"attn.qkv.{t}"].chunk(3)):
                hf[p + f"attention.attention.{part}.{t}"] = x
            hf[p + f"attention.output.dense.{t}"] = own[q + f"attn.proj.{t}"]
            hf[p + f"layernorm_before.{t}"] = own[q + f"norm1.{t}"]
            hf[p + f"layernorm_after.{t}"] = own[q + f"norm2.{t}"]
            hf[p + f"intermediate.dense.{t}"] = own[q + f"mlp.fc1.{t}"]
            hf[p + f"output.dense.{t}"] = own[q + f"mlp.fc2.{t}"]
    dst = random_architecture(spec)
    load_weights(spec, dst, hf, "phikon.bin")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(dst.eval()(x), src(x))
    del hf["encoder.layer.3.output.dense.bias"]
    with pytest.raises(CMTAError, match="output.dense.bias"):  # an incomplete file
        load_weights(spec, random_architecture(spec), hf, "phikon.bin")


def test_fetch_weights_from_the_hub_checked_and_gated_error(tmp_path, monkeypatch, capsys):
    """`cmta fetch-weights --encoder` through huggingface_hub (stood in for: no network
    here): the file is checked to load before it is saved; a failed download of a gated
    model says how to pass a token."""
    import huggingface_hub
    from safetensors.torch import save_file

    from cmta_pipeline.cli import main

    model, _ = build_named_encoder("lunit-vits8", "random")
    hub_file = tmp_path / "hub" / "model.safetensors"
    hub_file.parent.mkdir()
    save_file({k[len("trunk."):]: v for k, v in model.state_dict().items()}, str(hub_file))
    asked = []

    def fake_download(repo, filename, repo_type="model", revision=None, token=None,
                      cache_dir=None):
        asked.append((repo, filename, repo_type, revision))
        return str(hub_file)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    out = tmp_path / "weights" / "lunit-vits8" / "model.safetensors"
    assert main(["fetch-weights", "--encoder", "lunit-vits8", "-o", str(out)]) == 0
    assert asked == [("1aurent/vit_small_patch8_224.lunit_dino", "model.safetensors", "model",
                      None)]  # no revision pinned by its card or TRIDENT: main
    assert out.read_bytes() == hub_file.read_bytes()
    save_file({"x": torch.zeros(1)}, str(hub_file))  # not the encoder's weights
    capsys.readouterr()
    assert main(["fetch-weights", "--encoder", "lunit-vits8", "-o", str(tmp_path / "bad.st")])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not lunit-vits8 weights" in err[0], err
    assert not (tmp_path / "bad.st").exists()

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    assert main(["fetch-weights", "--encoder", "uni_v1", "-o", str(tmp_path / "uni.bin")])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MahmoodLab/UNI is gated" in err[0] and "HF_TOKEN" in err[0], err
