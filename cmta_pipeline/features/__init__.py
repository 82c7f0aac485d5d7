"""Patch features: ResNet-50 (ImageNet, through layer3) 1024-d embeddings of a slide's patches.

Rooms: :mod:`.encoder` (the network and its weights), :mod:`.patches` (coords file and
parallel slide reading), :mod:`.extract` (the loop, precision, output files). Reading
feature files that users bring is :mod:`cmta_pipeline.feature_files`.
"""

from .encoder import FEATURE_DIM, EncoderInfo, ResNet50Trunc, build_encoder, fetch_imagenet_weights
from .extract import (
    ExtractOptions,
    ExtractResult,
    SlideJob,
    extract_features,
    extract_slide,
    extract_slides,
    write_feature_files,
)
from .patches import PatchBatches, load_patch_grid

__all__ = [
    "FEATURE_DIM",
    "EncoderInfo",
    "ResNet50Trunc",
    "build_encoder",
    "fetch_imagenet_weights",
    "ExtractOptions",
    "ExtractResult",
    "SlideJob",
    "extract_features",
    "extract_slide",
    "extract_slides",
    "write_feature_files",
    "PatchBatches",
    "load_patch_grid",
]
