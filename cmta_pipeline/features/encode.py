"""Encoding one slide's patches: the reader processes, the encoder engine and its check
against eager fp32, and the sink the rows go to (resuming what it already holds)."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..errors import CMTAError
from .batches import device_pixels, make_loader, model_batches
from .encoder import EncoderInfo
from .readers import choose_reader, make_dataset
from .runner import EncoderRunner, Engine, build_runner, cosine_min, prepare_backend
from .settings import (
    COMPILED_MIN_COSINE,
    DRIFT_TOLERANCE,
    MIN_COSINE,
    ExtractOptions,
    reading_plan,
    resolve_compile,
    resolve_device,
    resolve_precision,
    use_compile_cache,
)

log = logging.getLogger(__name__)


class Fallback(Exception):
    """The checked engine disagrees with eager fp32 on a resumed slide: start it again."""


def run_settings(slide_path: Path, grid, info: EncoderInfo, input_px: int, opts: ExtractOptions,
                 batch_size: int, device: torch.device, threads: int, reader: str) -> dict:
    """Everything the bytes of the features depend on, for deciding whether to resume."""
    import hashlib

    coords = hashlib.sha256(np.ascontiguousarray(grid.coords).tobytes()).hexdigest()
    return {
        "slide": slide_path.name, "slide_bytes": slide_path.stat().st_size,
        "coords_sha256": coords, "patch_level": grid.patch_level,
        "patch_size": grid.patch_size, "weights": info.weights,
        "weights_sha256": info.weights_sha256, "input_px": input_px, "read_at": opts.read_at,
        "reader": reader,
        "batch_size": batch_size, "device": str(device), "compile": opts.compile,
        "precision": opts.precision,
        "threads": threads if device.type == "cpu" else None,
        "cmta_version": __version__, "torch": torch.__version__,
        "encoder": info.name, "normalisation": info.normalisation,
        "crop_px": crop_px(info),
    }


def crop_px(info: EncoderInfo) -> int | None:
    """The centre crop the network's input is cut to (GigaPath: 256 -> 224), else None."""
    resize = getattr(info, "resize_px", None)
    return int(info.input_px) if resize and info.input_px and resize != info.input_px else None


def encode(slide_path: Path, grid, opts: ExtractOptions, model: nn.Module, info: EncoderInfo,
           sink, runners: dict | None = None) -> dict:
    """Encode every patch of ``grid`` into ``sink`` (resuming what it holds); the run's facts.

    Reader: ``opts.reader`` for this slide (:func:`.readers.choose_reader`: OpenSlide where
    the tile path does not cover it). Engine: eager fp32 is the reference. Any other
    (compiled, or reduced precision) is checked on the first batch this run encodes: every
    patch's cosine to eager fp32 must be at least ``COMPILED_MIN_COSINE`` (fp32) or
    ``MIN_COSINE`` (bf16/fp16), else the slide is encoded in eager fp32 (one log line). A
    failure to compile falls back the same way.
    """
    input_px = encoder_input_px(opts, grid, info)
    device = resolve_device(opts.device)
    precision = resolve_precision(opts.precision, device, getattr(info, "precision", None))
    level0 = opts.read_at == "level0"
    level = 0 if level0 else grid.patch_level
    size = grid.patch_size_level0 if level0 else grid.patch_size
    choice = choose_reader(opts.reader, slide_path, level, size, input_px, device.type == "cuda")
    plan, on_device = reading_plan(device, opts, input_px, choice.name, size)
    threads = prepare_backend(device, opts.threads)
    n = len(grid.coords)
    settings = run_settings(slide_path, grid, info, input_px, opts, plan.batch_size, device,
                            threads, choice.name)
    dataset = make_dataset(choice, slide_path, grid, input_px, opts.read_at, on_device)

    state = sink.resume(settings)
    if state is not None:
        engine = Engine(**state["engine"])
        log.info("%s: resuming after %d of %d patches already encoded (%s)",
                 slide_path.name, state["rows"], n, engine.label())
    else:
        state = {"rows": 0}
        engine = Engine(resolve_compile(opts.compile, device, n, opts.compile_min_patches,
                                        precision), precision)
    if engine.compiled:
        use_compile_cache(opts.compile_cache)
    stats = {"input_px": input_px, "device": device, "batch_size": plan.batch_size,
             "workers": plan.workers, "item_patches": plan.item_patches,
             "read_level": dataset.level, "read_size_px": dataset.size,
             "resumed_rows": int(state["rows"]), "reader": choice.name,
             "reader_note": choice.note, "resize": "device" if on_device else "reader",
             "crop_px": settings["crop_px"]}
    while True:
        try:
            return {**stats, **encode_rows(slide_path, dataset, opts, model, engine, sink,
                                           settings, state, plan, device, runners)}
        except Fallback as fb:
            # the saved rows came from an engine that no longer passes its check here
            engine, state, stats["resumed_rows"] = fb.args[0], {"rows": 0}, 0


def encoder_input_px(opts: ExtractOptions, grid, info: EncoderInfo) -> int:
    """The side patches are resized to: ``--input-px``, else the coords file's plan, else
    224, for ResNet-50 (any size); the network's own size for the other encoders, or the
    side it resizes to before its centre crop (GigaPath: 256); a different ``--input-px``
    is an error."""
    if info.input_px is None:
        return int(opts.input_px or grid.encoder_input_px or 224)
    side = int(getattr(info, "resize_px", None) or info.input_px)
    if opts.input_px and int(opts.input_px) != side:
        raise CMTAError(f"--input-px {opts.input_px}: {info.name} takes {side} px "
                        f"patches; leave --input-px unset")
    return side


@dataclass
class _Check:
    """The first batch's check of a non-reference engine against eager fp32."""

    model: nn.Module
    device: torch.device
    opts: ExtractOptions
    slide_path: Path
    start: int  # rows resumed: a rejected engine then restarts the slide (Fallback)
    settings: dict
    sink: object
    batch_size: int
    runners: dict | None

    def run(self, batch, ok, idx, feats, why, engine, check, runner):
        """(features of the batch, runner, engine, check) after checking ``feats``: a
        rejected engine is replaced by eager fp32, and the slide starts again. The check's
        reference runs untuned (cuDNN's heuristic plans, a few patches); the rest of a
        rejected slide runs on a tuned eager fp32 runner (:func:`.runner.build_runner`)."""
        reference = EncoderRunner(self.model, self.device, "fp32", tune=False,
                                  normalisation=self.settings["normalisation"],
                                  crop=self.settings.get("crop_px"))
        take = min(len(idx), max(1, self.opts.check_patches))
        sel = torch.from_numpy(ok[:take])
        ref = reference(batch["pixels"][:take])
        cos, why = None, why if feats is None else "no decodable patch checked"
        if feats is not None and sel.any():
            cos = cosine_min(feats[:take][sel.to(feats.device)], ref[sel.to(ref.device)])
            why = f"min cosine {cos:.7f} to eager fp32"
        threshold = COMPILED_MIN_COSINE if engine.precision == "fp32" else MIN_COSINE
        if check is None:
            check = {"min_cosine": cos, "fallback": ""}
        if not (cos is not None and cos >= threshold):  # NaN fails too
            log.warning("%s: %s features rejected (%s; need >= %s): encoding this "
                        "slide in eager fp32", self.slide_path.name, engine.label(), why,
                        threshold)
            rejected = engine.label()
            engine = Engine(False, "fp32")
            if self.start:
                raise Fallback(engine)
            check = {"min_cosine": cos, "fallback": f"{rejected}: {why}"}
            self.sink.begin(self.settings, {"rows": 0, "engine": asdict(engine)})
            runner = build_runner(self.model, self.device, engine, self.batch_size,
                                  self.slide_path, self.runners, self.settings["normalisation"],
                                  self.settings.get("crop_px"))
            feats = ref if take == len(idx) else runner(batch["pixels"])
        return feats, runner, engine, check


def encode_rows(slide_path, dataset, opts, model, engine, sink, settings, state, plan,
                device, runners=None) -> dict:
    """Encode the rows of ``dataset`` from ``state["rows"]`` on into ``sink``; returns the
    engine used, the check's outcome, the time spent (reading waits apart) and, for a
    compiled engine, the first batch's time (compilation) apart."""
    n, batch_size = len(dataset), plan.batch_size
    start = int(state["rows"])
    sink.begin(settings, {**state, "engine": asdict(engine)})
    check = state.get("check")  # the first run's outcome, kept so resumed files are equal
    norm = (settings["normalisation"], settings.get("crop_px"))
    runner = build_runner(model, device, engine, batch_size, slide_path, runners, *norm)
    if runner is None:  # compilation failed (logged): eager fp32
        engine = Engine(False, "fp32")
        if start:
            raise Fallback(engine)
        sink.begin(settings, {"rows": 0, "engine": asdict(engine)})
        runner = build_runner(model, device, engine, batch_size, slide_path, runners, *norm)
        check = {"min_cosine": None, "fallback": "compilation failed"}
    checking = engine != Engine(False, "fp32")
    checker = _Check(model, device, opts, slide_path, start, settings, sink, batch_size,
                     runners)
    loader = make_loader(dataset, start, n, batch_size, plan.item_patches, plan.workers, device)
    progress = sys.stderr.isatty() if opts.progress is None else opts.progress
    from tqdm import tqdm

    bar = tqdm(total=n, initial=start, unit="patch", desc=slide_path.stem,
               disable=not progress, mininterval=2.0, file=sys.stderr)
    read_wait, first = 0.0, None  # first: (rows, seconds) of a compiled engine's first batch
    t0 = time.perf_counter()
    batches = model_batches(loader, dataset, device, batch_size, str(slide_path))
    try:
        for batch, waited in batches:
            read_wait += waited
            ok, idx = batch["ok"], batch["index"]
            if not ok.all():
                _undecodable(slide_path, batch, ok, opts.on_error)
            why, t_batch = "", time.perf_counter()
            try:
                feats = runner(batch["pixels"])
            except Exception as exc:
                if not (checking and runner.compiled):
                    raise
                feats, why = None, f"compiled encoder failed ({type(exc).__name__}: {exc})"
            if first is None and runner.compiled:
                first = (len(idx), time.perf_counter() - t_batch)
            if checking and (feats is None or ok.any()):
                feats, runner, engine, check = checker.run(batch, ok, idx, feats, why, engine,
                                                           check, runner)
                checking = False
            if check is not None and "check" not in sink.state:
                sink.state["check"] = check
            rows = feats.cpu().numpy()
            finite_or_fail(slide_path, rows, idx, ok, engine)
            sink.append(rows, [int(i) for i in idx[~ok]])
            bar.update(len(idx))
    finally:
        batches.close()  # stops the reader processes
        bar.close()
    seconds = time.perf_counter() - t0
    drift = drift_check(slide_path, dataset, sink, model, device, engine, settings,
                        opts.check_patches)
    return {"engine": engine, "check": check or {"min_cosine": None, "fallback": ""},
            "drift": drift, "seconds": seconds, "read_wait_s": read_wait,
            "compile_rows": first[0] if first else 0, "compile_s": first[1] if first else 0.0}


def finite_or_fail(slide_path: Path, rows: np.ndarray, idx, ok: np.ndarray,
                   engine: Engine) -> None:
    """Every decoded patch's feature of a batch is finite, or a one-line error naming the
    slide and the first patch (fp16 overflows: UNI is reported to give NaN there)."""
    bad = ok & ~np.isfinite(rows).all(axis=1)
    if bad.any():
        i = int(np.asarray(idx)[np.flatnonzero(bad)[0]])
        raise CMTAError(f"{slide_path}: the feature of patch #{i} is not finite "
                        f"({int(bad.sum())} in its batch) with {engine.label()}; rerun with "
                        f"--precision fp32")


def sink_rows(sink, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` of what ``sink`` holds (a memory map of a partial file on disk)."""
    if hasattr(sink, "features"):
        return sink.features[index]
    data = np.memmap(sink.data, dtype=np.float32, mode="r", shape=(sink.rows, sink.dim))
    return np.array(data[index])


def drift_check(slide_path: Path, dataset, sink, model, device, engine: Engine, settings,
                n_patches: int) -> dict:
    """The features of ``n_patches`` patches spread evenly over the whole slide against
    eager fp32 on the same pixels: their relative error ||f - f32|| / ||f32||, max and mean.
    Beyond :data:`.settings.DRIFT_TOLERANCE` of the engine's precision: a one-line error
    (the slide is not written). fp32 engines are not checked here: eager fp32 is the
    reference itself, and a compiled one was compared with it on the first batch (a
    second pass would cost the default CPU path its compile gain)."""
    out = {"patches": 0, "max_rel": None, "mean_rel": None}
    if engine.precision == "fp32" or sink.rows == 0:
        return out
    failed = set(sink.failed)
    spread = np.linspace(0, sink.rows - 1, num=min(sink.rows, max(1, n_patches)))
    index = np.array([i for i in np.unique(spread.round().astype(np.int64))
                      if int(i) not in failed], dtype=np.int64)
    item = dataset[index] if len(index) else None
    ok = np.asarray(item["ok"], dtype=bool) if item is not None else np.zeros(0, bool)
    if not ok.any():
        return out
    pixels = device_pixels(item, dataset, device)[torch.from_numpy(ok).to(device)]
    reference = EncoderRunner(model, device, "fp32", tune=False,
                              normalisation=settings["normalisation"],
                              crop=settings.get("crop_px"))
    ref = reference(pixels).double().cpu()
    got = torch.from_numpy(sink_rows(sink, index[ok])).double()
    rel = (got - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)
    j = int(rel.argmax())
    out = {"patches": int(ok.sum()), "max_rel": float(rel[j]), "mean_rel": float(rel.mean())}
    tolerance = DRIFT_TOLERANCE[engine.precision]
    if not out["max_rel"] <= tolerance:  # NaN fails too
        raise CMTAError(f"{slide_path}: {engine.label()} features differ from fp32 by "
                        f"{out['max_rel']:.3g} (relative, patch #{int(index[ok][j])}; "
                        f"tolerance {tolerance}); rerun with --precision fp32")
    log.info("%s: %s vs fp32 on %d patches across the slide: max relative error %.3g, "
             "mean %.3g", slide_path.name, engine.label(), out["patches"], out["max_rel"],
             out["mean_rel"])
    return out


def _undecodable(slide_path: Path, batch, ok: np.ndarray, on_error: str) -> None:
    """A batch with patches that could not be decoded: an error, or a warning under
    ``on_error="skip"`` (the patches are then left out and counted)."""
    msg = f"{slide_path}: {batch['error']}"
    if on_error == "fail":
        raise CMTAError(f"{msg}. The slide is damaged there; rerun with "
                        f"--on-error skip to leave such patches out (they are "
                        f"counted)")
    log.warning("%s (skipped; %d patch(es) in this batch)", msg, int((~ok).sum()))
