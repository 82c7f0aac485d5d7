"""The slides stage's commands: `cmta slides` (the slide sheet), `cmta tile` (segmentation and the patch grid of one slide), `cmta tile-summary` (every slide's tiling status), `cmta tile-qc` (the QC pictures at another size)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import yaml

from ..errors import CMTAError
from ..fileio import OutputLocked, atomic_output, fresh_outputs, write_text_atomic
from ..ids import check_id

# ---- cmta slides ----------------------------------------------------------------


def add_slides_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", help="folder of slides: named by TCGA/TARGET barcode, or a gdc-client "
                                      "download folder with --gdc-sample-sheet / --gdc-manifest")
    src.add_argument("--sheet", help="an existing sheet to check")
    p.add_argument("--recursive", action="store_true", help="also look in sub-folders")
    gdc = p.add_mutually_exclusive_group()
    gdc.add_argument("--gdc-sample-sheet", help="the GDC cart's sample sheet (gdc_sample_sheet.<date>.tsv): "
                                                "each slide file's Case ID, for TCGA and every other project")
    gdc.add_argument("--gdc-manifest", help="the GDC manifest (gdc_manifest.<date>.txt) of the slides: file "
                                            "sizes checked; patients from TCGA/TARGET barcodes")
    p.add_argument("-o", "--output", help="write the sheet here (TSV); default: print it")


def run_slides(args) -> int:
    import sys

    from .table import load_slide_table

    listing = args.gdc_sample_sheet or args.gdc_manifest
    if listing and args.folder:
        from .gdc import gdc_slide_table

        table, notes = gdc_slide_table(args.folder, listing)
        for note in notes:
            print(f"cmta slides: {note}", file=sys.stderr)
    else:
        table = load_slide_table(sheet=args.sheet, folder=args.folder, recursive=args.recursive,
                                 gdc_sample_sheet=args.gdc_sample_sheet, gdc_manifest=args.gdc_manifest)
    if args.output:
        with atomic_output(args.output) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
        print(f"{len(table)} slides of {table['case_id'].nunique()} patients -> {args.output}")
    else:
        print(table.to_csv(sep="\t", index=False), end="")
    return 0


# ---- cmta tile ------------------------------------------------------------------


log = logging.getLogger("cmta.tile")


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


def add_tile_arguments(p) -> None:
    p.add_argument("slide", nargs="?", help="slide file (any format OpenSlide 4 reads)")
    p.add_argument("-o", "--outdir", help="folder for <slide_id>.coords.h5 and .qc.png (needed "
                   "but with --batch)")
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
    p.add_argument("--publish-dir", help="the folder the status file names as the coords' home "
                   "(default --outdir): where a later step moves --outdir")
    p.add_argument("--batch", action="append", metavar="JSON",
                   help="many slides in one process, each --batch one slide: a JSON object (or a "
                   "list of them, or a file holding the list) with the keys slide, outdir, status "
                   "and optionally slide_id, case_id, mpp, stain, publish_dir; the other options "
                   "apply to each slide, and each slide's failure is handled as --on-error says")


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
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:  # a python tag (!!python/object ...) is refused here, as a line
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CMTAError(f"--settings {path}:{where}: not plain YAML ({problem})") from None
    except UnicodeDecodeError:
        raise CMTAError(f"--settings {path}: not a text file") from None
    if not isinstance(data, dict):
        raise CMTAError(f"{path}: expected a mapping of tiling settings")
    return data.get("tiling", data)


#: what an item of ``cmta tile --batch`` may set (the rest are the command's options)
BATCH_KEYS = ("slide", "outdir", "status", "slide_id", "case_id", "mpp", "stain", "publish_dir")


def load_batch(texts: list[str]) -> list[dict]:
    """The slides of the ``--batch`` options: each an inline JSON object or list of them,
    or a JSON file holding a list."""
    items: list = []
    for text in texts:
        inline = text.lstrip().startswith(("{", "["))
        try:
            value = json.loads(text if inline else Path(text).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CMTAError(f"--batch {text[:60]}: not JSON slides ({exc})") from None
        items += value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        bad = sorted(set(item) - set(BATCH_KEYS)) if isinstance(item, dict) else None
        if bad is None or bad or not {"slide", "outdir", "status"} <= set(item):
            raise CMTAError(f"--batch, item {i}: expected an object with slide, outdir and status "
                            f"(and optionally {', '.join(BATCH_KEYS[3:])})"
                            + (f"; unknown key {bad[0]!r}" if bad else ""))
    return items


def run_tile(args) -> int:
    """One slide, or each slide of ``--batch`` in turn (one process: the interpreter and
    its imports once), each exactly as ``cmta tile`` of that slide alone would."""
    if (args.slide is None) == (args.batch is None):
        raise CMTAError("cmta tile: give one slide file or --batch, not both or neither")
    if args.batch is None:
        if not args.outdir:
            raise CMTAError("cmta tile: give -o/--outdir")
        return tile_one(args)
    for item in load_batch(args.batch):
        one = argparse.Namespace(**{**vars(args), "slide_id": None, "case_id": None, "mpp": None,
                                    "publish_dir": None, **item, "batch": None})
        Path(one.outdir).mkdir(parents=True, exist_ok=True)  # a failed slide's: empty
        tile_one(one)
    return 0


def tile_one(args) -> int:
    from .segmentation import TilingParams
    from .sheet import slide_id_from_path
    from .tiling import coords_path, qc_path, tile_slide

    slide_id = args.slide_id or slide_id_from_path(args.slide)
    check_id(slide_id, "slide id", "--slide-id" if args.slide_id else f"{args.slide} (its file name)")
    if args.case_id is not None:
        check_id(args.case_id, "case id", "--case-id")
    if args.mpp is not None and not 0 < args.mpp < float("inf"):
        raise CMTAError(f"--mpp: must be a positive finite number of micrometres per pixel, got {args.mpp}")
    status = {"slide_id": slide_id, "case_id": args.case_id, "slide_path": str(args.slide)}
    outputs = (f"{slide_id}.coords.h5", f"{slide_id}.qc.png", f"{slide_id}.qc.json")
    try:
        # the previous run's status file, then its coords and picture: a failure leaves none
        status_file = Path(args.status).resolve() if args.status else None  # not under outdir
        with fresh_outputs(args.outdir, outputs, marker=status_file):
            settings = load_settings(args.settings)
            for key in list(_FLAGS) + ["allow_upsampling"]:
                value = getattr(args, key)
                if value is not None:
                    settings[key] = value
            params = TilingParams.from_mapping(settings, "tiling settings")
            result = tile_slide(args.slide, args.outdir, params, slide_id=slide_id, mpp=args.mpp)
    except CMTAError as exc:
        if args.status and not isinstance(exc, OutputLocked):  # the status file is the other run's
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
        if args.publish_dir:  # the files' home once published, as if tiled there
            status.update(coords_path=str(coords_path(args.publish_dir, slide_id)),
                          qc_path=str(qc_path(args.publish_dir, slide_id)))
        write_text_atomic(args.status, json.dumps(status, indent=2) + "\n")
    return 0


# ---- cmta tile-summary ----------------------------------------------------------


def add_tile_summary_arguments(p) -> None:
    p.add_argument("status", nargs="*", help="<slide_id>.tile.json files written by cmta tile --status")
    p.add_argument("-o", "--outdir", required=True, help="folder for summary.tsv and failed_slides.tsv")


def run_tile_summary(args) -> int:
    from .summary import write_summary

    df = write_summary(args.status, args.outdir)
    out = Path(args.outdir)
    n_ok = int((df["status"] == "ok").sum())
    print(f"{n_ok} of {len(df)} slides tiled; {len(df) - n_ok} failed (see {out / 'failed_slides.tsv'})")
    return 0


# ---- cmta tile-qc --------------------------------------------------------------


def add_tile_qc_arguments(p) -> None:
    p.add_argument("status", nargs="*", help="<slide_id>.tile.json files written by cmta tile --status")
    p.add_argument("--qc-max-px", type=int, help="longest side of the QC pictures (tiling.qc_max_px; default 1536)")
    p.add_argument("-o", "--output", required=True, help="table of every slide's picture and what was done")


def run_tile_qc(args) -> int:
    from .pictures import redraw_pictures
    from .segmentation import TilingParams

    size = TilingParams().qc_max_px if args.qc_max_px is None else args.qc_max_px
    counts = redraw_pictures(args.status, size, args.output)
    print(f"QC pictures at {size} px: {counts.get('redrawn', 0)} drawn again, "
          f"{counts.get('kept', 0)} kept, {counts.get('no picture', 0)} failed slides -> {args.output}")
    return 0


#: command -> (add its arguments to a parser, run it); see cmta_pipeline/cli.py
COMMANDS = {
    "slides": (add_slides_arguments, run_slides),
    "tile": (add_tile_arguments, run_tile),
    "tile-summary": (add_tile_summary_arguments, run_tile_summary),
    "tile-qc": (add_tile_qc_arguments, run_tile_qc),
}
