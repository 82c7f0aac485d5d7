"""A slide's features end to end: coords file + slide -> (N, D) features of the encoder,
checked and written atomically (:func:`extract_slide`), in memory (:func:`extract_features`), or for
several slides in one process sharing one encoder (:func:`extract_slides`)."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from .. import __version__
from ..errors import CMTAError
from ..fileio import atomic_output, fresh_outputs, remove_outputs
from ..ids import check_id
from .encode import encode
from .encoder import FEATURE_DIM, EncoderInfo
from .encoders.build import build_named_encoder
from .encoders.registry import get_spec
from .patches import READ_AT, load_patch_grid, open_slide
from .settings import COMPILE_MODES, ExtractOptions, ExtractResult
from .sinks import MemorySink, PartialFeatures

log = logging.getLogger(__name__)


def _finish(slide_path: Path, grid, info: EncoderInfo, opts: ExtractOptions, facts: dict,
            feats: np.ndarray, failed: list[int]):
    """Checked features of the kept patches, their coords, and the file's metadata."""
    keep = np.ones(len(grid.coords), dtype=bool)
    keep[np.asarray(failed, dtype=np.int64)] = False
    if not keep.all():
        feats = feats[keep]
    coords = grid.coords[keep]
    if len(feats) == 0:
        raise CMTAError(f"{slide_path}: every patch failed to decode; no features written")
    engine = facts["engine"]
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CMTAError(f"{slide_path}: {int(bad.sum())} feature vectors are not finite "
                        f"(first: patch at {tuple(coords[i])}) with {engine.label()}; "
                        f"rerun with --precision fp32 --compile off")
    check = facts["check"]
    meta = {
        "slide_id": "",
        "encoder": info.name,
        "weights": info.weights,
        "weights_sha256": info.weights_sha256,
        "feature_dim": info.dim,
        "input_px": facts["input_px"],
        "read_at": opts.read_at,
        "reader": facts["reader"],
        "reader_note": facts["reader_note"],
        "read_level": facts["read_level"],
        "read_size_px": facts["read_size_px"],
        "patch_level": grid.patch_level,
        "patch_size": grid.patch_size,
        "patch_size_level0": grid.patch_size_level0,
        "normalisation": info.normalisation,
        "precision": engine.precision,
        "compiled": engine.compiled,
        "device": str(facts["device"]),
        "batch_size": facts["batch_size"],
        "workers": facts["workers"],
        "precision_check_min_cosine": -1.0 if check["min_cosine"] is None
        else check["min_cosine"],
        "n_patches": int(len(feats)),
        "n_skipped": int((~keep).sum()),
        "coords_file": str(Path(grid.path).name),
        "slide_file": slide_path.name,
        "cmta_version": __version__,
    }
    if check["fallback"]:
        meta["precision_fallback"] = check["fallback"]
    meta.update(encoder_attrs(info, facts))
    for k in ("mpp", "target_mpp", "level_dim"):
        if k in grid.attrs:
            meta[f"coords_{k}"] = grid.attrs[k]
    return np.ascontiguousarray(feats, dtype=np.float32), coords, meta


def encoder_attrs(info: EncoderInfo, facts: dict) -> dict:
    """The encoder's own precision, crop and weights revision, and the drift check's
    outcome (-1: not checked, the features are eager fp32 themselves)."""
    drift = facts.get("drift") or {}
    return {
        "encoder_precision": getattr(info, "precision", "fp32"),
        "crop_px": facts.get("crop_px") or 0,
        "weights_revision": getattr(info, "revision", ""),
        "drift_patches": int(drift.get("patches") or 0),
        "drift_max_rel_error": -1.0 if drift.get("max_rel") is None else drift["max_rel"],
        "drift_mean_rel_error": -1.0 if drift.get("mean_rel") is None else drift["mean_rel"],
    }


def _prepare(slide_path, coords_path, opts: ExtractOptions, model, info):
    if opts.on_error not in ("fail", "skip"):
        raise CMTAError(f"on_error must be fail or skip, got {opts.on_error!r}")
    if opts.read_at not in READ_AT:
        raise CMTAError(f"--read-at must be one of {', '.join(READ_AT)}, got {opts.read_at!r}")
    if opts.compile not in COMPILE_MODES:
        raise CMTAError(f"--compile {opts.compile}: use one of {', '.join(COMPILE_MODES)}")
    slide_path = Path(slide_path)
    slide = open_slide(slide_path)
    try:
        grid = load_patch_grid(coords_path, slide)
    finally:
        slide.close()
    if model is None:
        model, info = encoder_of(opts)
    return slide_path, grid, model, info


def encoder_of(opts: ExtractOptions):
    """(model, info) of ``opts.encoder`` with ``opts.weights`` (None: ResNet-50's ImageNet
    weights, the hub file of any other encoder). A configured ``opts.weights_sha256`` is
    checked against the local weights file before it is loaded."""
    if opts.weights_sha256:
        from .encoder import check_weights_sha256

        check_weights_sha256(opts.weights, opts.weights_sha256)
    return build_named_encoder(opts.encoder, opts.weights or "hub")


def extract_features(
    slide_path: str | os.PathLike,
    coords_path: str | os.PathLike,
    opts: ExtractOptions,
    model: nn.Module | None = None,
    info: EncoderInfo | None = None,
):
    """Features of every patch of ``coords_path``, in memory: (features (N', D) float32,
    coords (N', 2) int64, metadata dict). N' < N only with ``on_error="skip"``.

    ``model``/``info`` let callers reuse one encoder over many slides. :func:`extract_slide`
    is the same computation written to files (and resumable).
    """
    slide_path, grid, model, info = _prepare(slide_path, coords_path, opts, model, info)
    sink = MemorySink(len(grid.coords), info.dim)
    facts = encode(slide_path, grid, opts, model, info, sink)
    feats, coords, meta = _finish(slide_path, grid, info, opts, facts, sink.result(),
                                  sink.failed)
    meta.update(seconds=facts["seconds"], read_wait_s=facts["read_wait_s"])
    return feats, coords, meta


def write_feature_files(outdir, slide_id: str, feats: np.ndarray, coords: np.ndarray,
                        meta: dict) -> tuple[Path, Path]:
    """Write ``<slide_id>.pt`` then ``<slide_id>.features.h5`` under ``outdir``, atomically.

    The h5 is written last, so its presence means both files are complete. Layout:
    ``features`` (N, 1024) float32, ``coords`` (N, 2) int64 with CLAM's ``patch_level`` and
    ``patch_size`` attributes; everything in ``meta`` as file attributes.
    """
    outdir = Path(outdir)
    pt = outdir / f"{slide_id}.pt"
    h5 = outdir / f"{slide_id}.features.h5"
    with atomic_output(pt) as tmp, open(tmp, "wb") as fh:
        # to a file object: torch.save would otherwise name the archive's folder after the
        # random temporary name, and two runs would not give the same bytes
        torch.save(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)), fh)
    with atomic_output(h5) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=feats.astype(np.float32, copy=False))
            c = f.create_dataset("coords", data=coords.astype(np.int64, copy=False))
            c.attrs["patch_level"] = meta["patch_level"]
            c.attrs["patch_size"] = meta["patch_size"]
            c.attrs["patch_size_level0"] = meta["patch_size_level0"]
            for k, v in {**meta, "slide_id": slide_id}.items():
                f.attrs[k] = v
    return h5, pt


def extract_slide(slide_path, coords_path, outdir, opts: ExtractOptions,
                  slide_id: str | None = None, model=None, info=None,
                  runners: dict | None = None) -> ExtractResult:
    """Encode one slide and write its feature files; returns what happened (and how fast).

    Rows are written batch by batch to a partial file beside the outputs
    (:class:`PartialFeatures`); a killed run resumes from them (``opts.resume``), and the
    outputs are then byte-identical to an uninterrupted run's. Bad input (a
    :class:`CMTAError`) removes the partial file. ``model``/``info``/``runners`` let
    :func:`extract_slides` share one encoder between slides.
    """
    slide_path = Path(slide_path)
    slide_id = checked_slide_id(slide_id, slide_path, coords_path)
    # the previous run's .features.h5 (the marker), then its .pt: a failure leaves neither;
    # the partial features a killed run resumes from are kept
    with fresh_outputs(outdir, (f"{slide_id}.pt",), marker=f"{slide_id}.features.h5"):
        return _extract_slide(slide_path, coords_path, outdir, opts, slide_id, model, info, runners)


def _extract_slide(slide_path: Path, coords_path, outdir, opts: ExtractOptions, slide_id: str,
                   model, info, runners) -> ExtractResult:
    slide_path, grid, model, info = _prepare(slide_path, coords_path, opts, model, info)
    sink = PartialFeatures(outdir, slide_id, len(grid.coords), info.dim)
    if not opts.resume:
        sink.discard()
    try:
        facts = encode(slide_path, grid, opts, model, info, sink, runners)
        feats, coords, meta = _finish(slide_path, grid, info, opts, facts, sink.result(),
                                      sink.failed)
    except CMTAError:
        sink.discard()  # bad input: it would fail the same way again
        raise
    finally:
        sink.close()
    meta["slide_id"] = slide_id
    h5, pt = write_feature_files(outdir, slide_id, feats, coords, meta)
    sink.discard()
    n = meta["n_patches"] + meta["n_skipped"]
    done = n - facts["resumed_rows"]
    res = ExtractResult(
        slide_id=slide_id, h5=h5, pt=pt, n_patches=meta["n_patches"],
        n_skipped=meta["n_skipped"], seconds=facts["seconds"],
        patches_per_s=steady_rate(done, facts), read_wait_s=facts["read_wait_s"],
        device=meta["device"], precision=meta["precision"],
        min_cosine=None if meta["precision_check_min_cosine"] < 0
        else meta["precision_check_min_cosine"],
        stats={**meta, "seconds": facts["seconds"], "read_wait_s": facts["read_wait_s"],
               "resumed_rows": facts["resumed_rows"], "compile_s": facts["compile_s"],
               "resize": facts["resize"], "item_patches": facts["item_patches"]},
    )
    log.info(
        "%s: %d patches -> %s in %.1f s (%.1f patches/s%s, waited %.1f s for reading; %s %s, "
        "%s, reader %s, weights %s%s%s)", slide_id, res.n_patches, h5, res.seconds,
        res.patches_per_s, f" after {facts['compile_s']:.1f} s for the compiled first batch"
        if facts["compile_s"] else "", res.read_wait_s, res.device, facts["engine"].label(),
        meta["precision"], meta["reader"], meta["weights"],
        f"; resumed after {facts['resumed_rows']}" if facts["resumed_rows"] else "",
        f"; {res.n_skipped} undecodable patches skipped" if res.n_skipped else "",
    )
    return res


def steady_rate(done: int, facts: dict) -> float:
    """Patches per second of the loop, the compiled engine's first batch (compilation, or
    loading the compiled code) left out when later batches followed it."""
    seconds, rows = facts["seconds"], done
    if facts.get("compile_rows") and done > facts["compile_rows"]:
        seconds -= facts["compile_s"]
        rows -= facts["compile_rows"]
    return rows / max(seconds, 1e-9)


def default_slide_id(slide_path, coords_path) -> str:
    """The coords file's slide_id attribute, else the slide file name without extension."""
    try:
        with h5py.File(coords_path, "r") as f:
            v = f.attrs.get("slide_id") or f["coords"].attrs.get("slide_id")
    except Exception:
        v = None
    if isinstance(v, bytes):
        v = v.decode(errors="replace")
    if v:  # a name from a file: checked like every id (cmta_pipeline/ids.py)
        return check_id(str(v), "slide id", f"{coords_path} (attribute slide_id)")
    return check_id(Path(slide_path).stem, "slide id", f"{slide_path} (its file name)")


def checked_slide_id(slide_id: str | None, slide_path, coords_path) -> str:
    """``slide_id`` (--slide-id) checked, else :func:`default_slide_id`."""
    return check_id(slide_id, "slide id", "--slide-id") if slide_id else default_slide_id(slide_path, coords_path)


@dataclass
class SlideJob:
    """One slide of a multi-slide :func:`extract_slides` run."""

    slide: str | os.PathLike
    coords: str | os.PathLike
    slide_id: str | None = None
    tile_status: str | os.PathLike | None = None  # `cmta tile --status`: failed -> no features


def tiling_failed(status_path) -> str | None:
    """The reason in a `cmta tile` status file whose status is not ok, else None."""
    try:
        status = json.loads(Path(status_path).read_text())
    except (OSError, ValueError) as exc:
        raise CMTAError(f"{status_path}: unreadable tile status file ({exc})") from exc
    if status.get("status") == "ok":
        return None
    return str(status.get("reason") or f"status {status.get('status')!r}")


def write_failed_feature_files(outdir, slide_id: str, reason: str,
                               dim: int = FEATURE_DIM) -> tuple[Path, Path]:
    """Empty feature files (zero patches, ``status = "failed"``) for a slide whose tiling
    failed, so that a job encoding several slides has every output it declares. Nothing
    reads them as features: :func:`cmta_pipeline.features.files.load_features` rejects a
    file with no patches, and the cohort keeps only the slides tiled successfully."""
    meta = {"status": "failed", "reason": reason, "n_patches": 0, "patch_level": 0,
            "patch_size": 0, "patch_size_level0": 0, "feature_dim": dim,
            "cmta_version": __version__}
    return write_feature_files(outdir, slide_id, np.zeros((0, dim), np.float32),
                               np.zeros((0, 2), np.int64), meta)


def extract_slides(jobs: list[SlideJob], outdir, opts: ExtractOptions) -> list[ExtractResult]:
    """Encode several slides in one process: the encoder is built (and, where it pays,
    compiled) once for all of them. Each slide is written as by :func:`extract_slide`;
    a slide whose ``tile_status`` says its tiling failed gets
    :func:`write_failed_feature_files`. The first slide that fails stops the run."""
    model = info = None
    runners: dict = {}  # the encoder runners built for the first slide, reused by the next
    results = []
    t0 = time.perf_counter()
    ids = [checked_slide_id(job.slide_id, job.slide, job.coords) for job in jobs]
    # no earlier run's features of a slide this run does not reach (it stops at a failure)
    remove_outputs(outdir, [f"{s}.features.h5" for s in ids] + [f"{s}.pt" for s in ids])
    for i, (job, slide_id) in enumerate(zip(jobs, ids), 1):
        reason = tiling_failed(job.tile_status) if job.tile_status else None
        if reason is not None:
            write_failed_feature_files(outdir, slide_id, reason, get_spec(opts.encoder).dim)
            log.info("%s: tiling failed (%s); empty feature files marked failed", slide_id,
                     reason)
        else:
            if model is None:
                model, info = encoder_of(opts)
            results.append(extract_slide(job.slide, job.coords, outdir, opts,
                                         slide_id=slide_id, model=model, info=info,
                                         runners=runners))
        if len(jobs) > 1:
            log.info("slide %d of %d done, %.1f s in all", i, len(jobs),
                     time.perf_counter() - t0)
    return results
