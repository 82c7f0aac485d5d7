"""The patch encoders: a registry (:mod:`.registry`, torch-free: names, dimensions,
geometry, weights, licences) and one module per family that builds them: ResNet-50
(:mod:`..encoder`), timm ViTs (:mod:`.vit`), CONCH (:mod:`.conch`), CTransPath's Swin
(:mod:`.swin`); :mod:`.build` gives them their weights (random, hub or a local file).
"""

from .registry import (
    ALIASES,
    DEFAULT_ENCODER,
    NORMALISATIONS,
    REGISTRY,
    EncoderSpec,
    canonical,
    get_spec,
    table_rows,
)

__all__ = ["ALIASES", "DEFAULT_ENCODER", "NORMALISATIONS", "REGISTRY", "EncoderSpec",
           "canonical", "get_spec", "table_rows"]
