"""The features stage: ResNet-50 (ImageNet, through layer3) 1024-d embeddings of a slide's
patches (``cmta extract``, ``cmta fetch-weights``; rule file ``workflow/rules/features.smk``;
docs/features.md).

Rooms: :mod:`.encoder` (the network and its weights), :mod:`.patches` (coords file and
the OpenSlide reader), :mod:`.readers` (which reader reads a slide; the tile readers),
:mod:`.tiles` (JPEG tiles read straight from a TIFF/SVS level), :mod:`.resize` (PIL's
resize in torch, on the GPU), :mod:`.batches` (reader processes' items joined into the
model's batches), :mod:`.settings` (options, device, batching, precision, compile),
:mod:`.runner` (the encoder as it runs on batches), :mod:`.encode` (one slide's loop and
its precision check), :mod:`.sinks` (in memory, or on disk to resume), :mod:`.extract`
(one slide or several, to files), :mod:`.files` (reading feature files: ours and those
users bring).
"""

from .encoder import FEATURE_DIM, EncoderInfo, ResNet50Trunc, build_encoder, fetch_imagenet_weights
from .extract import SlideJob, extract_features, extract_slide, extract_slides, write_feature_files
from .files import find_feature_file, load_bag, load_features
from .patches import PatchBatches, load_patch_grid
from .settings import ExtractOptions, ExtractResult

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
    "find_feature_file",
    "load_bag",
    "load_features",
]
