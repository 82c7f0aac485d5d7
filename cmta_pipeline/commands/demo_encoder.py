"""``cmta demo-encoder``: the demo's random ResNet-50 with BatchNorm statistics from its slides."""

from __future__ import annotations

HELP = "the demo's encoder: random ResNet-50 weights with BatchNorm statistics from the slides' patches"


def add_arguments(p) -> None:
    p.add_argument("slides", nargs="+", help="slide files to take tissue patches from")
    p.add_argument("-o", "--output", required=True, help="state dict (.pth) for features.weights")
    p.add_argument("--patch-px", type=int, required=True, help="patch side at level 0 (px)")
    p.add_argument("--input-px", type=int, required=True, help="encoder input side (px)")
    p.add_argument("--per-slide", type=int, default=4, help="patches per slide")


def run(args) -> int:
    from ..demo_cohort import calibrated_random_encoder

    n = calibrated_random_encoder(args.slides, args.output, args.patch_px, args.input_px, args.per_slide)
    print(f"random ResNet-50, BatchNorm statistics from {n} patches -> {args.output}")
    return 0
