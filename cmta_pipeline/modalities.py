"""Which inputs each model reads, without importing torch.

The workflow plans its jobs from this table (which runs need patch features and, on a
cluster, a GPU) in the Python that runs Snakemake, which need not have torch.
``cmta_pipeline.models.MODELS`` pairs each network's name with its class and is checked
against it; ``LINEAR_MODELS`` (``coxnet``) are fitted by scikit-survival instead.
"""

from __future__ import annotations

#: model name -> the inputs it reads: "path" (a bag of patch features), "omics" (six families)
MODALITIES: dict[str, tuple[str, ...]] = {
    "cmta": ("path", "omics"),
    "snn": ("omics",),
    "snntrans": ("omics",),
    "meanmil": ("path",),
    "maxmil": ("path",),
    "attmil": ("path",),
    "transmil": ("path",),
    "dualtrans": ("path", "omics"),
    # Table 1 baselines as their reference implementations (docs/models.md)
    "clam_sb": ("path",),
    "clam_mb": ("path",),
    "mcat": ("path", "omics"),
    "mcat_omic": ("omics",),
    "porpoise": ("path", "omics"),
    "m3if": ("path", "omics"),
    "gpdbn": ("path", "omics"),
    "hfbsurv": ("path", "omics"),
    # the linear floor of every table: elastic-net Cox on the genomic arm's inputs
    # (scikit-survival; cmta_pipeline/training/coxnet.py), no network
    "coxnet": ("omics",),
}

#: models in MODALITIES that are no network (cmta_pipeline.models.MODELS lists the others):
#: trained by `cmta train` through scikit-survival, no GPU, no heatmaps, no `cmta predict`
LINEAR_MODELS: tuple[str, ...] = ("coxnet",)


def modalities(name: str) -> tuple[str, ...]:
    """The inputs a model reads: ("path",), ("omics",) or ("path", "omics")."""
    try:
        return MODALITIES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODALITIES)}") from None


def reads_slides(name: str) -> bool:
    """True for models that read patch features (their runs need slides and features)."""
    return "path" in modalities(name)
