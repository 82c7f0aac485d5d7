"""The demo's encoder: the seeded random ResNet-50 with BatchNorm statistics set from the
demo slides' own tissue patches (no labels, no download)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import CMTAError
from ..fileio import atomic_output


def calibrated_random_encoder(slide_paths: list[str], out: str | os.PathLike, patch_px: int,
                              input_px: int, per_slide: int = 4, seed: int = 0) -> int:
    """Save the seeded random ResNet-50 (``weights: random``) with its BatchNorm statistics
    set from tissue patches of these slides; return the number of patches used.

    Why: a freshly initialised ResNet has identity BatchNorm, and its features are nearly
    the same large vector for every patch (mean ~6, patient-to-patient sd ~0.15 on the demo),
    which attention models on raw features cannot learn from in a few epochs. With running
    statistics from the cohort's own patches (no labels: like any normalisation statistic)
    activations are normalised as in a trained network and patients differ ~8x more,
    relative to the mean. Patches: ``patch_px`` square at level 0, resized to ``input_px``
    (area interpolation, as the extraction shrinks), ImageNet-normalised."""
    import cv2
    import openslide
    import torch

    from ..features.encoder import IMAGENET_MEAN, IMAGENET_STD, build_encoder, calibrate_batchnorm

    rng = np.random.default_rng(seed)
    patches = []
    for path in slide_paths:
        with openslide.OpenSlide(path) as slide:
            w, h = slide.dimensions
            img = np.asarray(slide.read_region((0, 0), 0, (w, h)).convert("RGB"))
        tissue = img.astype(np.int32).sum(axis=2) < 3 * 233
        found = 0
        for _ in range(200):
            if found == per_slide or w <= patch_px or h <= patch_px:
                break
            y, x = int(rng.integers(0, h - patch_px)), int(rng.integers(0, w - patch_px))
            if tissue[y:y + patch_px, x:x + patch_px].mean() > 0.9:
                patches.append(cv2.resize(img[y:y + patch_px, x:x + patch_px], (input_px, input_px),
                                          interpolation=cv2.INTER_AREA))
                found += 1
    if len(patches) < 16:
        raise CMTAError(f"only {len(patches)} tissue patches of {patch_px} px found in {len(slide_paths)} slides")
    x = torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    model, _ = build_encoder("random")
    calibrate_batchnorm(model, x)
    with atomic_output(out) as tmp:
        torch.save(model.state_dict(), tmp)
    return len(patches)
