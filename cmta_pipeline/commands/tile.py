"""``cmta tile``: segmentation and the physical patch grid of one slide."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from ..errors import CMTAError
from ..fileio import write_text_atomic

HELP = "tissue segmentation and the 512 px @ 40x patch grid of one slide"

log = logging.getLogger("cmta.tile")

# command-line flags that override keys of the tiling settings
_FLAGS = {
    "preset": str,
    "stain": str,
    "patch_size_px": int,
    "target_mpp": float,
    "encoder_input_px": int,
    "seg_mpp": float,
    "keep_rule": str,
    "min_tissue_fraction": float,
}


def add_arguments(p) -> None:
    p.add_argument("slide", help="slide file (any format OpenSlide 4 reads)")
    p.add_argument("-o", "--outdir", required=True, help="folder for <slide_id>.coords.h5 and .qc.png")
    p.add_argument("--slide-id", help="output name (default: file name without extension)")
    p.add_argument("--case-id", help="patient id, recorded in the status file")
    p.add_argument("--mpp", type=float, help="micrometres per level-0 pixel; overrides the slide's metadata")
    p.add_argument(
        "--settings",
        help="tiling settings as a YAML/JSON file or an inline JSON object (the config's tiling: section)",
    )
    for key, typ in _FLAGS.items():
        p.add_argument("--" + key.replace("_", "-"), type=typ, dest=key, default=None)
    p.add_argument("--allow-upsampling", action="store_true", default=None,
                   help="tile slides coarser than the encoder input (features from upsampled pixels)")
    p.add_argument("--status", help="write a JSON status file (ok or failed, with the reason)")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="skip: record the failure in --status and exit 0, so a cohort run goes on")


def load_settings(text: str | None) -> dict:
    """Settings from an inline JSON object or a YAML/JSON file."""
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CMTAError(f"--settings: invalid JSON ({exc})") from None
    path = Path(text)
    if not path.is_file():
        raise CMTAError(f"--settings: file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise CMTAError(f"{path}: expected a mapping of tiling settings")
    return data.get("tiling", data)


def run(args) -> int:
    from ..segmentation import TilingParams
    from ..slides import slide_id_from_path
    from ..tiling import tile_slide

    slide_id = args.slide_id or slide_id_from_path(args.slide)
    status = {"slide_id": slide_id, "case_id": args.case_id, "slide_path": str(args.slide)}
    try:
        settings = load_settings(args.settings)
        for key in list(_FLAGS) + ["allow_upsampling"]:
            value = getattr(args, key)
            if value is not None:
                settings[key] = value
        params = TilingParams.from_mapping(settings, "tiling settings")
        result = tile_slide(args.slide, args.outdir, params, slide_id=slide_id, mpp=args.mpp)
    except CMTAError as exc:
        if args.status:
            status.update(status="failed", reason=str(exc), n_patches=0)
            write_text_atomic(args.status, json.dumps(status, indent=2) + "\n")
        if args.on_error == "skip" and args.status:
            log.error("%s (skipped)", exc)
            return 0
        raise
    print(f"{slide_id}: {result.n_patches} patches -> {result.coords_path}")
    print(f"{slide_id}: {result.note}")
    if args.status:
        status.update(status="ok", reason="", **result.as_dict())
        write_text_atomic(args.status, json.dumps(status, indent=2) + "\n")
    return 0
