"""Survival models: CMTA and the paper's baselines, behind one constructor.

>>> model = build_model("cmta", [94, 334, 521, 468, 1496, 479])
>>> out = model(bag, omics)   # bag (M, 1024); omics: six 1-D tensors
>>> out["hazards"], out["survival"], out["risk"], out["p"], out["p_hat"]
"""

from __future__ import annotations

from torch import nn

from ..modalities import LINEAR_MODELS, MODALITIES, modalities
from .baselines import SNN, DualTrans, MaxMIL, MeanMIL, SNNTrans
from .cmta import CMTA
from .gpdbn import GPDBN
from .hfbsurv import HFBSurv
from .m3if import M3IF
from .mcat import MCAT, MCATGenomic
from .mil import CLAMMB, CLAMSB, AttMIL, TransMIL
from .official import convert_official_state_dict
from .porpoise import PORPOISE

_CLASSES: dict[str, type[nn.Module]] = {
    "cmta": CMTA,
    "snn": SNN,
    "snntrans": SNNTrans,
    "meanmil": MeanMIL,
    "maxmil": MaxMIL,
    "attmil": AttMIL,
    "transmil": TransMIL,
    "dualtrans": DualTrans,
    # Table 1 baselines as their reference implementations (docs/models.md, "Table 1 baselines")
    "clam_sb": CLAMSB,
    "clam_mb": CLAMMB,
    "mcat": MCAT,
    "mcat_omic": MCATGenomic,
    "porpoise": PORPOISE,
    "m3if": M3IF,
    "gpdbn": GPDBN,
    "hfbsurv": HFBSurv,
}
assert _CLASSES.keys() == MODALITIES.keys() - set(LINEAR_MODELS), "cmta_pipeline/modalities.py lists other models"

#: name -> (class, modalities it reads); the modalities come from cmta_pipeline.modalities
MODELS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    name: (cls, MODALITIES[name]) for name, cls in _CLASSES.items()
}

#: models that take build_model's ``fusion`` ("concat" | "bilinear")
FUSION_MODELS = ("cmta", "mcat")

#: options build_model accepts besides the positional ones (unknown keys are an error)
OPTIONS = {
    "n_bins", "attention", "cross_attention", "alignment", "detach", "ppeg", "short_exact",
    "dropout", "depth",
}


def build_model(
    name: str,
    omic_sizes: list[int] | None,
    path_dim: int = 1024,
    size: str = "small",
    fusion: str = "concat",
    **options,
) -> nn.Module:
    """The ``nn.Module`` for ``name`` (see :data:`MODELS`).

    Options: ``attention`` ("nystrom" | "exact"), ``n_bins`` (4), and the CMTA ablations
    ``cross_attention``, ``alignment``, ``detach``, ``ppeg`` (all True by default; ``ppeg``
    also applies to TransMIL and DualTrans). ``fusion`` ("concat" | "bilinear") is CMTA's
    and MCAT's. ``depth``: SNN blocks (small SNN; 4 as MCAT's reference).
    ``short_exact`` (False): True is a departure (docs/models.md). With its defaults "cmta"
    computes the authors' network.
    """
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    unknown = set(options) - OPTIONS
    if unknown:
        raise ValueError(f"unknown model option(s) {sorted(unknown)}; known: {sorted(OPTIONS)}")
    cls, modalities = MODELS[key]
    if "omics" in modalities and not omic_sizes:
        raise ValueError(f"model {name!r} reads genomics: omic_sizes must be given")
    if key in FUSION_MODELS:
        return cls(list(omic_sizes), path_dim=path_dim, size=size, fusion=fusion, **options)
    if "omics" in modalities:
        omic_sizes = list(omic_sizes)
    return cls(omic_sizes, path_dim=path_dim, size=size, **options)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "build_model", "count_parameters", "modalities", "MODELS", "CMTA", "convert_official_state_dict",
]
