"""Which reader reads a slide's patches (``features.reader``, ``cmta extract --reader``),
and the reader processes' datasets of the paths that read JPEG tiles directly.

=============  =========================================================================
reader         what a reader process does
=============  =========================================================================
``openslide``  OpenSlide ``read_region`` + PIL resize (the reference; every format)
``tiles``      the level's JPEG tiles decoded by libjpeg-turbo (simplejpeg): OpenSlide's
               pixels bit for bit (:mod:`.tiles`); on CUDA the patch goes to the device
               as read and is resized there to the same bytes (:mod:`.resize`)
``tiles-half`` as ``tiles``, tiles decoded at half size: faster, not OpenSlide's pixels
               (a departure: features move beyond the agreement bound)
``nvjpeg``     only the tiles' compressed bytes; the GPU decodes them
               (``torchvision.io.decode_jpeg(device="cuda")``) and resizes (CUDA only; a
               departure until the GPU check measures its agreement)
``auto``       ``tiles`` (the default), OpenSlide where a slide is not covered
=============  =========================================================================

A slide (at the level it is read) that the tile paths do not cover (NDPI, MIRAX, DICOM,
JPEG 2000 or LZW levels, ...), or a missing simplejpeg / tifffile, is read through
OpenSlide with one log line; so is each patch whose tiles fail to decode or whose origin
OpenSlide places between pixels. The path used is recorded in the feature file
(attributes ``reader`` and ``reader_note``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import CMTAError
from .patches import PatchBatches, resize_array
from .tiles import (
    TileLayout,
    TileSource,
    half_scale_ok,
    jpeg_tiles_missing,
    level_layout,
    level_origin,
)

log = logging.getLogger(__name__)

READERS = ("auto", "openslide", "tiles", "tiles-half", "nvjpeg")
#: readers whose pixels are not OpenSlide's: options, named as departures
DEPARTURES = ("tiles-half", "nvjpeg")


@dataclass(frozen=True)
class ReaderChoice:
    """The reader a slide is read with, and why."""

    name: str  # openslide | tiles | tiles-half | nvjpeg
    asked: str
    note: str  # what the tile path covers, or why OpenSlide reads the slide
    layout: TileLayout | None = None


def check_reader(asked: str, cuda: bool) -> None:
    if asked not in READERS:
        raise CMTAError(f"--reader {asked}: use one of {', '.join(READERS)}")
    if asked == "nvjpeg" and not cuda:
        raise CMTAError("--reader nvjpeg decodes on the GPU: it needs a CUDA device "
                        "(--device auto/cuda on a GPU node); use --reader tiles on the CPU")


def choose_reader(asked: str, slide_path, level: int, size: int, input_px: int,
                  cuda: bool) -> ReaderChoice:
    """The reader for one slide read at ``level`` in ``size`` px patches (logged when it is
    not the one asked for)."""
    check_reader(asked, cuda)
    if asked == "openslide":
        return ReaderChoice("openslide", asked, "asked for")
    want = "tiles" if asked == "auto" else asked
    missing = jpeg_tiles_missing() if want != "nvjpeg" else _nvjpeg_missing()
    if missing:
        note = f"{want} needs {missing}"
        log.warning("%s: reading through OpenSlide (%s)", slide_path, note)
        return ReaderChoice("openslide", asked, note)
    layout, note = level_layout(slide_path, level)
    if layout is None:
        log.info("%s: reading through OpenSlide (%s)", slide_path, note)
        return ReaderChoice("openslide", asked, note)
    if want == "tiles-half" and not half_scale_ok(size, input_px, layout):
        note += f"; {size} px patches to {input_px} px cannot be decoded at half size"
        log.info("%s: reading with tiles (%s)", slide_path, note)
        return ReaderChoice("tiles", asked, note, layout)
    return ReaderChoice(want, asked, note, layout)


def _nvjpeg_missing() -> str | None:
    try:
        import tifffile  # noqa: F401
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception as exc:  # noqa: BLE001 (a log line says what is missing)
        return f"tifffile and torchvision.io ({type(exc).__name__}: {exc})"
    return None


def make_dataset(choice: ReaderChoice, slide_path, grid, input_px: int, read_at: str,
                 resize_on_device: bool):
    """The reader processes' dataset of ``choice``. ``resize_on_device``: items hold the
    patches as read and the encoder's device resizes them (``tiles``; ``nvjpeg`` always)."""
    if choice.name == "openslide":
        return PatchBatches(slide_path, grid, input_px, read_at)
    if choice.name == "nvjpeg":
        return TileStreams(slide_path, grid, input_px, read_at, choice.layout)
    if choice.name == "tiles-half":
        return TileBatches(slide_path, grid, input_px, read_at, choice.layout, scale=2)
    return TileBatches(slide_path, grid, input_px, read_at, choice.layout,
                       resize=not resize_on_device)


class TileBatches(PatchBatches):
    """The ``tiles`` readers: as :class:`PatchBatches`, the patches decoded from the level's
    JPEG tiles (:class:`.tiles.TileSource`), OpenSlide for the patches it cannot do exactly
    (an origin between pixels, a tile that fails to decode: OpenSlide then reads it, or
    says why not). ``scale=2``: tiles decoded at half size (the ``tiles-half`` departure;
    resized in the reader)."""

    def __init__(self, slide_path, grid, input_px: int, read_at: str, layout: TileLayout,
                 scale: int = 1, resize: bool = True):
        super().__init__(slide_path, grid, input_px, read_at, resize=resize or scale != 1)
        self.reader = "tiles" if scale == 1 else "tiles-half"
        self.source = TileSource(slide_path, layout)
        self.scale = int(scale)

    def read(self, i: int) -> np.ndarray:
        x, y = self.coords[i]
        origin = level_origin(int(x), int(y), self.level, self.source.layout.downsample)
        if origin is not None:
            k = self.scale if origin[0] % self.scale == 0 and origin[1] % self.scale == 0 else 1
            try:
                crop = self.source.crop(origin[0], origin[1], self.size, k)
            except Exception:  # noqa: BLE001 (OpenSlide reads the patch, or says why not)
                crop = None
            if crop is not None:
                if not self.resize:
                    return crop
                return resize_array(crop, self.input_px, None if crop.shape[0] == self.input_px
                                    else self.filter)
        return self.read_openslide(i)


class TileStreams(PatchBatches):
    """The ``nvjpeg`` readers: item = the complete JPEG streams of the tiles its patches
    cover (each tile once) and where each goes; the patches OpenSlide must read (origin
    between pixels) as pixels. :func:`cmta_pipeline.features.batches.device_pixels`
    decodes and pastes them on the GPU.

    Item keys besides ``index``, ``ok``, ``error``: ``streams`` (uint8, the streams one
    after the other), ``stream_ends`` (int64), ``place`` (int32 rows: patch, stream, top,
    left, source top, source left, height, width), ``fallback`` (patch positions read by
    OpenSlide) and ``fallback_pixels`` (their pixels as read, size x size)."""

    reader = "nvjpeg"

    def __init__(self, slide_path, grid, input_px: int, read_at: str, layout: TileLayout):
        super().__init__(slide_path, grid, input_px, read_at, resize=False)
        self.source = TileSource(slide_path, layout)

    def __getitem__(self, indices):
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        ok = np.ones(len(indices), dtype=bool)
        error, streams, seen, place, fb, fb_px = "", [], {}, [], [], []
        for j, i in enumerate(indices):
            x, y = self.coords[i]
            origin = level_origin(int(x), int(y), self.level, self.source.layout.downsample)
            if origin is not None:
                place += self._placements(j, origin, streams, seen)
                continue
            px, why = self.read_guarded(int(i), self.read_openslide)
            if px is None:
                ok[j], error = False, error or why
            else:
                fb.append(j)
                fb_px.append(px)
        data = np.frombuffer(b"".join(streams), dtype=np.uint8) if streams \
            else np.zeros(0, np.uint8)
        return {"index": indices, "ok": ok, "error": error, "streams": data.copy(),
                "stream_ends": np.cumsum([len(s) for s in streams], dtype=np.int64),
                "place": np.asarray(place, dtype=np.int32).reshape(-1, 8),
                "fallback": np.asarray(fb, dtype=np.int64),
                "fallback_pixels": np.stack(fb_px) if fb_px
                else np.zeros((0, self.size, self.size, 3), np.uint8)}

    def _placements(self, j: int, origin, streams: list, seen: dict) -> list:
        """Rows of ``place`` for patch position ``j`` at level pixel ``origin``; new tile
        streams are appended to ``streams`` (``seen``: tile -> stream number)."""
        lay, (x0, y0), side = self.source.layout, origin, self.size
        rows = []
        for row in range(max(y0 // lay.tile_h, 0), min((y0 + side - 1) // lay.tile_h,
                                                       lay.down - 1) + 1):
            for col in range(max(x0 // lay.tile_w, 0), min((x0 + side - 1) // lay.tile_w,
                                                           lay.across - 1) + 1):
                if (col, row) not in seen:
                    s = self.source.stream(col, row)
                    seen[(col, row)] = None if s is None else len(streams)
                    if s is not None:
                        streams.append(s)
                s = seen[(col, row)]
                if s is None:  # a missing tile stays black, as in OpenSlide
                    continue
                tx, ty = col * lay.tile_w, row * lay.tile_h
                # the tile's pixels inside the level (padding past its edge stays black)
                ax0, ay0 = max(tx, x0), max(ty, y0)
                ax1 = min(tx + lay.tile_w, x0 + side, lay.width)
                ay1 = min(ty + lay.tile_h, y0 + side, lay.height)
                if ax1 > ax0 and ay1 > ay0:
                    rows.append((j, s, ay0 - y0, ax0 - x0, ay0 - ty, ax0 - tx, ay1 - ay0,
                                 ax1 - ax0))
        return rows
