"""cmta fetch-weights: download the ImageNet ResNet-50 weights once, for offline nodes."""

from __future__ import annotations

import argparse

HELP = "download the ImageNet ResNet-50 weights once, for offline nodes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True,
                   help="where to save the state dict, e.g. resources/weights/resnet50-0676ba61.pth")
    p.add_argument("--url", default=None,
                   help="download from here instead of torchvision's URL (a mirror); the file "
                   "name must keep torchvision's -<sha256 prefix>. part")


def run(args: argparse.Namespace) -> int:
    from ..features.encoder import fetch_imagenet_weights

    fetch_imagenet_weights(args.output, url=args.url)
    return 0
