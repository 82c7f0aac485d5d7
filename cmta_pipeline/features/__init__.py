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
users bring), :mod:`.encoders` (the registry of patch encoders and their builders).
"""

# Imported on first use (PEP 562), so that Snakemake can plan with the torch-free encoder
# registry (:mod:`.encoders.registry`) without importing torch.
_HOME = {
    "FEATURE_DIM": "encoder", "EncoderInfo": "encoder", "ResNet50Trunc": "encoder",
    "build_encoder": "encoder", "fetch_imagenet_weights": "encoder",
    "SlideJob": "extract", "extract_features": "extract", "extract_slide": "extract",
    "extract_slides": "extract", "write_feature_files": "extract",
    "find_feature_file": "files", "load_bag": "files", "load_features": "files",
    "PatchBatches": "patches", "load_patch_grid": "patches",
    "ExtractOptions": "settings", "ExtractResult": "settings",
    "build_named_encoder": "encoders.build",
}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)


__all__ = sorted(_HOME)
