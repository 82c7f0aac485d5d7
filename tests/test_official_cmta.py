"""The default CMTA computes the authors' network: same weights, same outputs.

``tests/data/official_cmta_outputs.json`` was recorded from the authors' code
(github.com/FT-ZHOU-ZZZ/CMTA, ``models/cmta/network.py`` and ``util.py``, kept outside this
repository) by a script that, for each (size, fusion) case:

1. builds their ``CMTA(omic_sizes=BLCA, fusion=..., model_size=...)`` on CPU (their
   ``.cuda()`` calls made no-ops), lists its ``state_dict()`` keys and shapes ("keys");
2. overwrites every tensor with :func:`recipe_weights` (seeded from the key name, so this
   test rebuilds the same weights without their code) and puts it in eval mode;
3. for each bag size M, feeds :func:`recipe_inputs` (``x_path`` (M, 1024) and
   ``x_omic1..6``) and records hazards, S, and the four class tokens p (pathology encoder),
   p_hat (pathology decoder), g, g_hat: hazards and S in full, of each token its first 32
   channels and its L2 norm (the fixture stays small).

The test regenerates the same weights under their names, converts them with
``convert_official_state_dict``, loads them strictly into ``build_model("cmta", ...)`` with
default options and compares. Bags of 1 and 50 patches and the 7 genomic tokens are
shorter than the 128 landmarks (where the default once departed from the published
arithmetic); 300 and 700 patches (325 and 730 tokens) pad to 384 and 768, whose first 19 and 6
landmarks are zero pads (the reduced pseudo-inverse).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch

from cmta_pipeline.models import build_model, convert_official_state_dict

FIXTURE = Path(__file__).parent / "data" / "official_cmta_outputs.json"
BLCA = [94, 334, 521, 468, 1496, 479]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def recipe_weights(keys: list[list]) -> dict[str, torch.Tensor]:
    """Deterministic weights for [name, shape] pairs: normal with std 1/sqrt(fan-in) for
    tensors of 2+ dims (class tokens: 0.1), LayerNorm weights 1 + 0.1 N(0, 1), other 1-D
    tensors 0.1 N(0, 1); each drawn from a generator seeded with crc32(name)."""
    out = {}
    for name, shape in keys:
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        t = torch.randn(*shape, generator=g)
        if "cls_token" in name:
            t = t * 0.1
        elif len(shape) >= 2:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            t = t / fan_in**0.5
        elif name.endswith("norm.weight"):
            t = 1 + 0.1 * t
        else:
            t = 0.1 * t
        out[name] = t
    return out


def recipe_inputs(m: int, omic_sizes: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Bag (m, 1024) and six genomic vectors, standard normal, generator seeded with m."""
    g = torch.Generator().manual_seed(m)
    bag = torch.randn(m, 1024, generator=g)
    return bag, [torch.randn(s, generator=g) for s in omic_sizes]


def _cases():
    return json.loads(FIXTURE.read_text())["cases"]


@pytest.mark.parametrize("index,size,fusion", [
    (0, "small", "concat"), (1, "small", "bilinear"), (2, "large", "concat"), (3, "large", "bilinear"),
])
def test_default_cmta_reproduces_the_official_network(index, size, fusion):
    case = _cases()[index]
    assert (case["size"], case["fusion"]) == (size, fusion)
    theirs = recipe_weights(case["keys"])
    model = build_model("cmta", BLCA, size=case["size"], fusion=case["fusion"]).eval()
    model.load_state_dict(convert_official_state_dict(theirs))  # strict: every name maps
    for rec in case["outputs"]:
        bag, omics = recipe_inputs(rec["patches"], BLCA)
        with torch.no_grad():
            out = model(bag, omics)
        for key in ("hazards", "survival"):
            assert torch.allclose(out[key][0], torch.tensor(rec[key]), atol=1e-5), (rec["patches"], key)
        for key in ("p", "p_hat", "g", "g_hat"):
            got = out[key][0]
            assert torch.allclose(got[:32], torch.tensor(rec[key]["head"]), atol=1e-5), (rec["patches"], key)
            assert abs(got.norm().item() - rec[key]["norm"]) < 1e-4, (rec["patches"], key)


def test_conversion_accepts_wrappers_and_names_unknown_keys():
    keys = _cases()[0]["keys"]
    theirs = recipe_weights(keys[:3])
    wrapped = {"state_dict": {"module." + k: v for k, v in theirs.items()}}
    assert convert_official_state_dict(wrapped).keys() == convert_official_state_dict(theirs).keys()
    assert "pathology_embedding.0.weight" in convert_official_state_dict(theirs)
    with pytest.raises(KeyError, match="fc_omic_extra.weight"):
        convert_official_state_dict({"fc_omic_extra.weight": torch.zeros(1)})
