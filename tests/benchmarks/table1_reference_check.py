"""Table 1 baselines against their authors' code: parameter counts and, where the network
is the same function, outputs with the same weights.

    python tests/benchmarks/table1_reference_check.py --refs DIR

DIR holds checkouts of the reference repositories, kept outside this repository:
  DIR/MCAT (mahmoodlab/MCAT), DIR/PORPOISE (mahmoodlab/PORPOISE), DIR/CLAM (mahmoodlab/CLAM),
  DIR/TransMIL (szc19990412/TransMIL; needs `nystrom-attention` and `einops` importable),
  DIR/GPDBN (isfj/GPDBN), DIR/HFBSurv (Liruiqing-ustc/HFBSurv),
  DIR/M3IF (yfzon/Multi-modal-Multi-instance-Learning).
MCAT's and PORPOISE's `models/model_coattn.py` import `_LinearWithBias`, gone from newer
torch: the script provides it as `nn.Linear` (same parameters) before importing them.
The reference networks run on CPU (their `.cuda()` / `torch.cuda.FloatTensor` calls are
redirected to CPU tensors).

Sizes: BLCA's families [94, 334, 521, 468, 1496, 479], 1024-d patch features, 4 bins.
Weights are copied from the reference network into ours (in parameter order, or by
name for TransMIL); outputs compared as hazards on a bag of 300 (and more) patches.
Results: docs/models.md, section 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cmta_pipeline.models import build_model, count_parameters  # noqa: E402

SIZES = [94, 334, 521, 468, 1496, 479]
G = sum(SIZES)


def load(root: Path, module: str):
    """Import ``module`` from a reference checkout (each has its own ``models`` package)."""
    for k in [k for k in sys.modules if k == "models" or k.startswith("models.")]:
        del sys.modules[k]
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(root))


def n_params(m: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable)


def copy_in_order(ref: nn.Module, ours: nn.Module) -> None:
    rp, op = list(ref.parameters()), list(ours.parameters())
    if [p.shape for p in rp] != [p.shape for p in op]:
        raise SystemExit(f"{type(ours).__name__}: parameters are not in the reference's order")
    with torch.no_grad():
        for a, b in zip(rp, op):
            b.copy_(a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refs", required=True, type=Path)
    refs = ap.parse_args().refs
    torch.manual_seed(0)
    torch.set_num_threads(1)
    # compatibility shims for old reference code on CPU / newer torch
    nn.modules.linear._LinearWithBias = nn.Linear
    torch.cuda.FloatTensor = lambda *shape: torch.empty(*shape)
    torch.Tensor.cuda = lambda self, *a, **k: self

    bag = torch.randn(300, 1024)
    omics = [torch.randn(s) for s in SIZES]
    flat = torch.cat(omics).unsqueeze(0)
    rows = []

    def check(name, ref, ours, ref_hazards=None):
        rows.append((name, n_params(ref), count_parameters(ours),
                     None if ref_hazards is None else float((ref_hazards - ours(bag, omics)["hazards"]).abs().max())))

    with torch.no_grad():
        m = load(refs / "PORPOISE", "models.model_genomic")
        r, o = m.SNN(omic_input_dim=G, n_classes=4).eval(), build_model("snn", SIZES).eval()
        copy_in_order(r, o)
        check("snn", r, o, torch.sigmoid(r(x_omic=flat)))

        m = load(refs / "MCAT", "models.model_set_mil")
        r, o = m.MIL_Attention_FC_surv(fusion=None, n_classes=4).eval(), build_model("attmil", SIZES).eval()
        copy_in_order(r, o)
        check("attmil", r, o, r(x_path=bag)[0])

        m = load(refs / "CLAM", "models.model_clam")
        for cls, name in ((m.CLAM_SB, "clam_sb"), (m.CLAM_MB, "clam_mb")):
            r, o = cls(n_classes=4, dropout=0.25).eval(), build_model(name, SIZES).eval()
            copy_in_order(r, o)
            check(name, r, o, torch.sigmoid(r(bag)[0]))

        m = load(refs / "MCAT", "models.model_coattn")
        kw = {"x_path": bag, **{f"x_omic{i + 1}": x for i, x in enumerate(omics)}}
        for fusion in ("concat", "bilinear"):
            r = m.MCAT_Surv(fusion=fusion, omic_sizes=SIZES, n_classes=4).eval()
            o = build_model("mcat", SIZES, fusion=fusion).eval()
            copy_in_order(r, o)
            check(f"mcat ({fusion})", r, o, r(**kw)[0])
        r = m.MCAT_Surv(fusion="concat", omic_sizes=SIZES, n_classes=4)
        arm = nn.ModuleList([r.sig_networks, r.omic_transformer, r.omic_attention_head, r.omic_rho, r.classifier])
        rows.append(("mcat_omic (genomic arm)", n_params(arm), count_parameters(build_model("mcat_omic", SIZES)), None))

        m = load(refs / "PORPOISE", "models.model_porpoise")
        r, o = m.PorpoiseMMF(omic_input_dim=G, n_classes=4).eval(), build_model("porpoise", SIZES).eval()
        copy_in_order(r, o)
        check("porpoise", r, o, torch.sigmoid(r(x_path=bag, x_omic=flat)))

        m = load(refs / "TransMIL", "models.TransMIL")
        for n, short_exact in ((300, True), (100, False), (5000, True)):
            r = m.TransMIL(n_classes=4).eval()
            o = build_model("transmil", SIZES, short_exact=short_exact).eval()
            sd = {("pathology_embedding." + k[5:] if k.startswith("_fc1.") else
                   "head.classifier." + k[5:] if k.startswith("_fc2.") else "pathology_encoder." + k): v
                  for k, v in r.state_dict().items()}
            o.load_state_dict(sd, strict=True)
            b = torch.randn(n, 1024)
            diff = float((torch.sigmoid(r(data=b.unsqueeze(0))["logits"]) - o(b, omics)["hazards"]).abs().max())
            rows.append((f"transmil ({n} patches, short_exact={short_exact})", n_params(r), count_parameters(o), diff))

        sys.path.insert(0, str(refs / "GPDBN" / "GPDBN_Cox"))
        networks = importlib.import_module("networks")
        core = n_params(networks.GPDBN(32, 4), trainable=True)
        rows.append(("gpdbn (core + our inputs 141,376)", core + 141_376, count_parameters(build_model("gpdbn", SIZES)), None))

        sys.path.insert(0, str(refs / "HFBSurv" / "HFBSurv" / "model"))
        hfb = importlib.import_module("HFB_fusion")
        h = hfb.HFBSurv((G, 1024, 1), (50, 50, 50, 256), (20, 20, 4), (0.1, 0.1, 0.1, 0.3), 20, 0.1)
        two = n_params(h, True) - sum(n_params(getattr(h, k)) for k in ("encoder_cona", "Linear_cona", "Linear_cona_a"))
        rows.append(("hfbsurv (without copy-number branch)", two, count_parameters(build_model("hfbsurv", SIZES)), None))

        m = load(refs / "M3IF", "models.mil_net")
        f = m.MILFusion(img_feat_input_dim=1024, tab_feat_input_dim=32, img_feat_rep_layers=4, num_modal=2, fusion="mmtm")
        ref = n_params(f) + 3 * (f.classifier[-1].in_features + 1) + G * 32 + 32
        rows.append(("m3if (4 logits + our genomic block)", ref, count_parameters(build_model("m3if", SIZES)), None))

    print(f"{'model':45s} {'reference':>12s} {'ours':>12s}  max |hazard diff|")
    ok = True
    for name, ref, ours, diff in rows:
        ok &= ref == ours and (diff is None or diff < 1e-5)
        print(f"{name:45s} {ref:12,d} {ours:12,d}  {'-' if diff is None else f'{diff:.1e}'}")
    print("all equal" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
