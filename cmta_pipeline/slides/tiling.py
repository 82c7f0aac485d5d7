"""The slide stage: segment one slide, lay the physical patch grid, write coords + QC.

``tile_slide`` is what ``cmta tile`` and the Snakemake rule ``tile`` run. Its outputs:

* ``<slide_id>.coords.h5``: dataset ``coords`` (N x 2 int64, level-0 top-left x, y) with
  CLAM's attributes ``patch_size`` (side at ``patch_level``) and ``patch_level`` (the level
  to read patches from, = ``read_level``), plus ``patch_size_level0``, ``read_level``,
  ``read_downsample``, ``mpp``, ``mpp_source``, ``target_mpp``, ``patch_size_px``,
  ``encoder_input_px``, ``encoder_mpp``, ``upsampled``, ``level_dim``, ``slide_id``,
  ``slide_path``, ``tissue_area_um2`` and ``segmentation`` (JSON of the settings).
* ``<slide_id>.qc.png``: thumbnail with tissue contours (green), holes (blue) and patches (red),
  and ``<slide_id>.qc.jpg``, the same picture small (for the Snakemake report), and
  ``<slide_id>.qc.json``, the size it was drawn at (slides/pictures.py draws it again).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import CMTAError
from .patching import select_patches, write_coords
from .qc import write_picture
from .segmentation import TilingParams, check_stain, segment_tissue
from .sheet import slide_id_from_path
from .wsi import coarsest_level_at_most, open_slide, overview_image, slide_geometry

log = logging.getLogger(__name__)


@dataclass
class TileResult:
    slide_id: str
    coords_path: str
    qc_path: str
    n_patches: int
    mpp: float
    mpp_source: str
    patch_size_level0: int
    read_level: int
    read_mpp: float
    patch_size_read: int
    upsampled: bool
    tissue_area_um2: float
    seconds: float
    note: str

    def as_dict(self) -> dict:
        return asdict(self)


def coords_path(outdir: str | os.PathLike, slide_id: str) -> Path:
    return Path(outdir) / f"{slide_id}.coords.h5"


def qc_path(outdir: str | os.PathLike, slide_id: str) -> Path:
    return Path(outdir) / f"{slide_id}.qc.png"


def qc_thumbnail_path(outdir: str | os.PathLike, slide_id: str) -> Path:
    return Path(outdir) / f"{slide_id}.qc.jpg"


@dataclass
class ReadPlan:
    """Where a slide's patches are read: their side at level 0, the pyramid level they are
    read from and their side there, and whether the encoder input is upsampled."""

    patch0: int
    read_level: int
    read_ds: float
    read_mpp: float
    patch_read: int
    upsampled: bool
    note: str


def plan_read(path: Path, geom, params: TilingParams) -> ReadPlan:
    """The read plan of a slide of geometry ``geom``; an error for a slide too coarse
    (unless upsampling is allowed) or smaller than one patch."""
    patch0 = int(round(params.patch_um / geom.mpp))
    if patch0 < 2:
        raise CMTAError(f"{path}: a {params.patch_um:g} um patch is {patch0} px at {geom.mpp:g} um/px; too coarse a slide")
    read_level = coarsest_level_at_most(geom, params.encoder_mpp)
    read_ds = geom.level_downsamples[read_level]
    read_mpp = geom.level_mpp(read_level)
    patch_read = int(round(patch0 / read_ds))
    upsampled = patch_read < params.encoder_input_px * 0.98
    if upsampled and not params.allow_upsampling:
        raise CMTAError(
            f"{path}: level 0 is {geom.mpp:.3g} um/px, coarser than the {params.encoder_mpp:.3g} um/px "
            f"the encoder needs ({params.patch_um:g} um over {params.encoder_input_px} px): features "
            "would come from upsampled pixels; set tiling.allow_upsampling (or --allow-upsampling) to accept"
        )
    note = (
        f"level 0 at {geom.mpp:.4g} um/px ({geom.mpp_source}); {params.patch_size_px} px @ "
        f"{params.target_mpp:g} um/px = {patch0} px at level 0; read from level {read_level} "
        f"({read_mpp:.4g} um/px, {patch_read} px), resized to {params.encoder_input_px} px"
        + (" (UPSAMPLED: slide coarser than the encoder input)" if upsampled else " (no upsampling)")
    )
    if geom.dimensions[0] < patch0 or geom.dimensions[1] < patch0:
        raise CMTAError(
            f"{path}: slide is {geom.dimensions[0]} x {geom.dimensions[1]} px, smaller than one "
            f"{patch0} px patch ({params.patch_um:g} um)"
        )
    return ReadPlan(patch0, read_level, read_ds, read_mpp, patch_read, bool(upsampled), note)


def find_patches(slide, path: Path, geom, params: TilingParams, patch0: int):
    """(segmentation image, its downsample, the tissue, the patches' level-0 top-left
    corners); an error when there is no tissue or no patch with enough of it."""
    seg_rgb, seg_ds = overview_image(slide, geom, params.seg_mpp, path=str(path))
    check_stain(seg_rgb, params, str(path))
    tissue = segment_tissue(seg_rgb, geom.mpp * seg_ds, params)
    if not tissue.contours:
        raise CMTAError(
            f"{path}: no tissue found ({params.stain} detector, threshold {tissue.threshold:.0f}, "
            f"pieces smaller than {params.min_tissue_area_um2:g} um^2 ignored)"
        )
    step = max(1, int(round(patch0 * params.step_fraction)))
    coords = select_patches(
        tissue.mask, seg_ds, geom.dimensions, patch0, step, params.keep_rule, params.min_tissue_fraction
    )
    if len(coords) == 0:
        raise CMTAError(
            f"{path}: tissue found ({tissue.area_um2 / 1e6:.3f} mm^2) but no {params.patch_um:g} um "
            f"patch is at least {params.min_tissue_fraction:.0%} tissue"
        )
    return seg_rgb, seg_ds, tissue, coords


def tile_slide(
    path: str | os.PathLike,
    outdir: str | os.PathLike,
    params: TilingParams | None = None,
    slide_id: str | None = None,
    mpp: float | None = None,
) -> TileResult:
    """Segment ``path``, select patches and write ``<slide_id>.coords.h5`` and ``.qc.png``.

    Raises :class:`CMTAError` (naming the slide) for a missing, unreadable or corrupt
    slide, a missing pixel size, a slide too coarse for the encoder, or no tissue; in
    that case nothing is written.
    """
    t0 = time.perf_counter()
    params = params or TilingParams()
    path = Path(path)
    slide_id = slide_id or slide_id_from_path(path)
    slide = open_slide(path)
    try:
        geom = slide_geometry(slide, path, mpp)
        plan = plan_read(path, geom, params)
        seg_rgb, seg_ds, tissue, coords = find_patches(slide, path, geom, params, plan.patch0)
    finally:
        slide.close()

    attrs = {
        "patch_size": plan.patch_read,
        "patch_level": plan.read_level,
        "patch_size_level0": plan.patch0,
        "read_level": plan.read_level,
        "read_downsample": plan.read_ds,
        "read_mpp": plan.read_mpp,
        "mpp": geom.mpp,
        "mpp_source": geom.mpp_source,
        "target_mpp": params.target_mpp,
        "patch_size_px": params.patch_size_px,
        "encoder_input_px": params.encoder_input_px,
        "encoder_mpp": params.encoder_mpp,
        "upsampled": plan.upsampled,
        "level_dim": np.asarray(geom.dimensions, np.int64),
        "downsample": np.asarray([plan.read_ds, plan.read_ds]),
        "slide_id": slide_id,
        "slide_path": str(path),
        "tissue_area_um2": tissue.area_um2,
        "seg_threshold": tissue.threshold,
        "segmentation": params.as_dict(),
        "note": plan.note,
        "cmta_version": __version__,
    }
    out_coords, out_qc = coords_path(outdir, slide_id), qc_path(outdir, slide_id)
    # QC first: the coords file is the stage's product and the last thing written.
    caption = f"{slide_id}: {len(coords)} patches of {params.patch_um:g} um, read level {plan.read_level}"
    write_picture(outdir, slide_id, seg_rgb, seg_ds, tissue, coords, plan.patch0, caption, params.qc_max_px)
    write_coords(out_coords, coords, attrs)
    result = TileResult(
        slide_id=slide_id,
        coords_path=str(out_coords),
        qc_path=str(out_qc),
        n_patches=int(len(coords)),
        mpp=geom.mpp,
        mpp_source=geom.mpp_source,
        patch_size_level0=plan.patch0,
        read_level=plan.read_level,
        read_mpp=plan.read_mpp,
        patch_size_read=plan.patch_read,
        upsampled=plan.upsampled,
        tissue_area_um2=tissue.area_um2,
        seconds=time.perf_counter() - t0,
        note=plan.note,
    )
    log.info("%s: %d patches; %s; %.2f s", slide_id, result.n_patches, plan.note, result.seconds)
    return result

