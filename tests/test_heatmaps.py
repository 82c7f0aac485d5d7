"""Attention heatmaps: the captured attention is what the layers apply, and the command
draws a trained model's attention over the real example slide."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from cmta_pipeline.heatmaps.maps import PATHOLOGY_PANEL, attention_row, bag_attention, cross_attention
from cmta_pipeline.models import build_model
from cmta_pipeline.models.layers import CrossModalAttention
from cmta_pipeline.models.nystrom import NystromAttention

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("mode,n,short_exact", [
    ("nystrom", 300, True),  # longer than the landmarks: the Nystrom product
    ("nystrom", 200, True),  # front padding to a multiple of the landmarks
    ("nystrom", 40, True),  # shorter: softmax with the pads as null keys
    ("nystrom", 40, False),  # shorter, published arithmetic
    ("exact", 100, True),
])
def test_attention_row_is_what_the_layer_applies(mode, n, short_exact):
    torch.manual_seed(0)
    attn = NystromAttention(256, mode=mode, short_exact=short_exact).eval()
    x = torch.randn(1, n, 256)
    with torch.no_grad():
        full = attn(x)
        row = attention_row(attn, x, 0)  # (heads, N)
        _, _, v = attn._split(x)
        res = attn.res_conv(v)
        by_row = attn._merge((row[None, :, None, :] @ v) + res[:, :, :1])
    assert row.shape == (8, n)
    assert torch.allclose(by_row[0, 0], full[0, 0], atol=1e-4)
    if mode == "exact":
        assert torch.allclose(row.sum(-1), torch.ones(8), atol=1e-5)


def test_cross_attention_weights_reproduce_the_module():
    torch.manual_seed(1)
    mod = CrossModalAttention(256).eval()
    q, c = torch.randn(1, 6, 256), torch.randn(1, 50, 256)
    w = cross_attention(mod, q, c)
    v = torch.nn.functional.linear(c[0], *[t.chunk(3)[2] for t in (mod.in_proj_weight, mod.in_proj_bias)])
    assert torch.allclose(mod.out_proj(w @ v), mod(q, c)[0], atol=1e-5)
    assert torch.allclose(w.sum(1), torch.ones(6), atol=1e-5)


def test_bag_attention_panels_for_cmta_and_attmil():
    torch.manual_seed(2)
    sizes = [5, 6, 7, 8, 9, 10]
    cmta = build_model("cmta", sizes, path_dim=16).eval()
    bag = torch.randn(23, 16)  # 23 patches -> a 5 x 5 grid with 2 repeated
    omics = [torch.randn(s) for s in sizes]
    names, values, risk = bag_attention(cmta, bag, omics, list("ABCDEF"))
    assert names == list("ABCDEF") + [PATHOLOGY_PANEL] and values.shape == (23, 7)
    assert np.allclose(values[:, :6].sum(0), 1, atol=1e-5)  # repeated tokens folded back
    with torch.no_grad():
        assert risk == pytest.approx(float(cmta(bag, omics)["risk"][0]), abs=1e-6)  # hooks change nothing
    trans = build_model("transmil", None, path_dim=16).eval()
    names, values, _ = bag_attention(trans, bag, None, [])
    assert names == [PATHOLOGY_PANEL] and values.shape == (23, 1)
    att = build_model("attmil", None, path_dim=16).eval()
    names, values, _ = bag_attention(att, bag, None, [])
    assert names == ["attention"] and values.shape == (23, 1) and values.sum() == pytest.approx(1)


@pytest.mark.slow
def test_heatmap_command_on_the_real_slide(tcga_dir, slides_dir, tmp_path, capsys):
    """Real BLCA genomics; one held-out patient's slide is CMU-1-Small-Region.svs, tiled and
    embedded (random ResNet-50 weights), the others synthetic bags; CMTA trained 1 epoch."""
    from cmta_pipeline.cli import main

    slide = slides_dir / "CMU-1-Small-Region.svs"
    assert main(["genomics", str(tcga_dir / "tcga_blca_all_clean.csv.gz"), "--families",
                 str(tcga_dir / "signatures.csv"), "-o", str(tmp_path / "genomics")]) == 0
    cases = pd.read_csv(tmp_path / "genomics" / "patients.tsv", sep="\t")["case_id"][:30].tolist()
    sheet = pd.DataFrame({"slide_id": [f"{c}-S0" for c in cases], "case_id": cases})
    sheet.to_csv(tmp_path / "slides.tsv", sep="\t", index=False)
    assert main(["cohort", str(tmp_path / "genomics"), "-o", str(tmp_path / "cohort"),
                 "--slides", str(tmp_path / "slides.tsv"), "--n-folds", "3"]) == 0
    folds = pd.read_csv(tmp_path / "cohort/folds/fold_0/patients.tsv", sep="\t")
    case = folds.loc[folds["split"] == "heldout", "case_id"].iloc[0]
    real = f"{case}-S0"
    feats = tmp_path / "features"
    assert main(["tile", str(slide), "-o", str(tmp_path / "tiles"), "--slide-id", real]) == 0
    assert main(["extract", str(slide), str(tmp_path / "tiles" / f"{real}.coords.h5"), "-o", str(feats),
                 "--weights", "random", "--threads", "1", "--workers", "0", "--no-progress"]) == 0
    (feats / f"{real}.pt").unlink()
    rng = np.random.default_rng(0)
    for c in cases:
        if c != case:
            with h5py.File(feats / f"{c}-S0.features.h5", "w") as f:
                f["features"] = rng.standard_normal((int(rng.integers(5, 30)), 1024)).astype("float32")
                f["coords"] = np.zeros((len(f["features"]), 2), dtype="int64")
                f["coords"].attrs["patch_size_level0"] = 256
    run = tmp_path / "train" / "cmta"
    assert main(["train", "--cohort", str(tmp_path / "cohort"), "--fold", "0", "--model", "cmta",
                 "--features-dir", str(feats), "-o", str(run / "fold_0"), "--epochs", "1", "--threads", "1"]) == 0
    sheet.assign(path=[str(slide) if s == real else "absent.svs" for s in sheet.slide_id]).to_csv(
        tmp_path / "paths.tsv", sep="\t", index=False)
    out = tmp_path / "heatmaps"
    assert main(["heatmap", "--run-dir", str(run), "--cohort", str(tmp_path / "cohort"), "--features-dir",
                 str(feats), "--slides", str(tmp_path / "paths.tsv"), "--cases", case, "-o", str(out)]) == 0
    with h5py.File(out / f"{real}.attention.h5") as f, h5py.File(feats / f"{real}.features.h5") as g:
        att, panels = f["attention"][()], list(f["attention"].attrs["panels"])
        assert np.array_equal(f["coords"][()], g["coords"][()])  # rows in the coords order
    families = json.loads((tmp_path / "cohort" / "folds.json").read_text())["family_names"]
    assert panels == families + [PATHOLOGY_PANEL] and att.shape == (31, 7)
    assert np.allclose(att[:, :6].sum(0), 1, atol=1e-4)  # one slide = the whole bag
    assert (out / f"{real}.heatmap.png").stat().st_size > 50_000  # thumbnail + 7 panels
    index = pd.read_csv(out / "heatmaps.tsv", sep="\t")
    assert index.loc[0, "case_id"] == case and index.loc[0, "fold"] == 0 and index.loc[0, "patches"] == 31
    # the k highest / lowest-risk held-out patients
    assert main(["heatmap", "--run-dir", str(run), "--cohort", str(tmp_path / "cohort"), "--features-dir",
                 str(feats), "--top-k", "1", "-o", str(tmp_path / "top")]) == 0
    top = pd.read_csv(tmp_path / "top" / "heatmaps.tsv", sep="\t")
    assert list(top["chosen"]) == ["highest risk #1", "lowest risk #1"] and top.risk[0] >= top.risk[1]
    capsys.readouterr()
    assert main(["heatmap", "--run-dir", str(run), "--cohort", str(tmp_path / "cohort"), "--features-dir",
                 str(feats), "--cases", "NOBODY", "-o", str(out)]) == 2
    assert "NOBODY" in capsys.readouterr().err
