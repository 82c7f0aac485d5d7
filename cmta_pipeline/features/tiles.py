"""Patches straight from the JPEG tiles of a TIFF / SVS level: the ``tiles`` readers.

OpenSlide's ``read_region`` decodes the tiles a patch covers with libjpeg-turbo, paints
them into an ARGB cairo surface and un-premultiplies it to RGBA; the pipeline then drops
alpha. For a level stored as one tiled TIFF page of baseline JPEG tiles (what OpenSlide
itself reads directly: vendors ``aperio`` and ``generic-tiff``; compression 7, 8-bit, 3
samples, contiguous, photometric RGB or YCbCr) the same pixels come from

1. the compressed bytes of each tile (offsets and byte counts of the TIFF page, one
   ``os.pread`` each);
2. completed to a JPEG stream: the page's JPEGTables in front of the abbreviated tile
   (Aperio); where libjpeg would guess another colour space than the photometric tag says
   (Aperio's RGB-coded tiles have component ids 0, 1, 2 and no marker, which libjpeg takes
   for YCbCr) an Adobe APP14 marker saying RGB or YCbCr is put in and a JFIF APP0 marker,
   which would override it, is taken out; OpenSlide forces the colour space from the
   photometric tag in the same way;
3. decoded by libjpeg-turbo (the ``simplejpeg`` wheel) with OpenSlide's settings (accurate
   integer IDCT, fancy upsampling), pasted at integer offsets; tile padding past the
   level's right and bottom edges, missing tiles and anything outside the level are black,
   as OpenSlide's transparent pixels become after ``.convert("RGB")``.

Only patches whose origin at the level is a whole pixel are read so (at level 0 always;
at other levels when ``x / downsample`` is an integer and the patch does not start left
or above the slide): OpenSlide draws other origins at a sub-pixel offset, so those
patches, tiles that fail to decode, levels not covered and other formats (NDPI, MIRAX,
DICOM, JPEG 2000 or LZW levels, ...) are read through OpenSlide by the callers. The
pixels of this path are then OpenSlide's bit for bit (tests/test_readers.py).

``scale=2`` decodes at half size with libjpeg's scaled IDCT: faster, but the patch is
then resized twice (2x2, then to the encoder input), which moves features beyond the
agreement bound (docs/features.md, "Readers"): the ``tiles-half`` departure.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

#: OpenSlide vendors whose levels are plain tiled TIFF pages (tile grid = TIFF tile grid).
COVERED_VENDORS = ("aperio", "generic-tiff")
SOI, EOI = b"\xff\xd8", b"\xff\xd9"
#: decoded tiles a reader keeps (LRU): neighbouring patches share tiles. OpenSlide keeps
#: 32 MiB per handle; 96 tiles of 256 px are 18 MiB.
CACHE_TILES = 96


def jpeg_tiles_missing() -> str | None:
    """None if the packages of this path import, else what is missing (a log line)."""
    missing = []
    for mod in ("simplejpeg", "tifffile"):
        try:
            __import__(mod)
        except Exception as exc:  # ImportError, or a library that fails to load
            missing.append(f"{mod} ({type(exc).__name__}: {exc})")
    return ", ".join(missing) or None


def adobe_app14(transform: int) -> bytes:
    """APP14 "Adobe" segment; transform 0 = the components are RGB, 1 = YCbCr."""
    body = b"Adobe" + (100).to_bytes(2, "big") + b"\0\0" + b"\0\0" + bytes([transform])
    return b"\xff\xee" + (len(body) + 2).to_bytes(2, "big") + body


def skip_colour_markers(tile: bytes) -> int:
    """Offset just past SOI and any leading APP0 (JFIF) / APP14 (Adobe) segments."""
    i, n = 2, len(tile)
    while i + 4 <= n and tile[i] == 0xFF and tile[i + 1] in (0xE0, 0xEE):
        i += 2 + int.from_bytes(tile[i + 2:i + 4], "big")
    return i


def libjpeg_colour_guess(stream: bytes) -> str | None:
    """What libjpeg assumes for a 3-component stream, "rgb" or "ycbcr" (None: not 3
    components or unreadable). As ``jdapimin.c``: JFIF -> YCbCr; Adobe transform 0 -> RGB,
    else YCbCr; component ids 'R','G','B' -> RGB; anything else -> YCbCr."""
    i, n = 2, len(stream)
    jfif, adobe = False, None
    while i + 4 <= n and stream[i] == 0xFF:
        m = stream[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m in (0xD8, 0xD9):
            i += 2
            continue
        seg_len = int.from_bytes(stream[i + 2:i + 4], "big")
        seg = stream[i + 4:i + 2 + seg_len]
        if m == 0xE0 and seg[:5] == b"JFIF\0":
            jfif = True
        elif m == 0xEE and seg[:5] == b"Adobe" and len(seg) >= 12:
            adobe = seg[11]
        elif m in (0xC0, 0xC1):  # baseline / extended sequential start of frame
            if len(seg) < 13 or seg[5] != 3:
                return None
            if jfif:
                return "ycbcr"
            if adobe is not None:
                return "rgb" if adobe == 0 else "ycbcr"
            return "rgb" if (seg[6], seg[9], seg[12]) == (82, 71, 66) else "ycbcr"
        elif m == 0xDA:
            return None
        i += 2 + seg_len
    return None


@dataclass
class TileLayout:
    """Where the JPEG tiles of one OpenSlide level are in the file, and how they are coded."""

    page: int  # TIFF page (IFD) index
    width: int
    height: int
    tile_w: int
    tile_h: int
    across: int
    down: int
    offsets: np.ndarray  # int64, row-major tile order
    counts: np.ndarray  # int64; 0 = missing tile
    tables: bytes | None  # the page's JPEGTables (abbreviated tile streams), if any
    photometric: str  # "rgb" or "ycbcr": what OpenSlide decodes the tiles as
    downsample: float  # OpenSlide's downsample of the level


def level_layout(slide_path, level: int) -> tuple[TileLayout | None, str]:
    """(the layout, what it is) if ``level`` of ``slide_path`` is covered, else (None, why
    not). Needs OpenSlide (vendor, level size) and tifffile (the TIFF page)."""
    import openslide

    try:
        with openslide.OpenSlide(str(slide_path)) as osl:
            vendor = osl.properties.get("openslide.vendor")
            if not 0 <= level < osl.level_count:
                return None, f"level {level} not in 0..{osl.level_count - 1}"
            dims = tuple(osl.level_dimensions[level])
            ds = float(osl.level_downsamples[level])
    except Exception as exc:  # noqa: BLE001 (reported, and OpenSlide reads it or says why)
        return None, f"OpenSlide cannot open it ({type(exc).__name__}: {exc})"
    if vendor not in COVERED_VENDORS:
        return None, f"format {vendor!r} is not a plain tiled TIFF (covered: " \
                     f"{', '.join(COVERED_VENDORS)})"
    import tifffile

    try:
        with tifffile.TiffFile(str(slide_path)) as tif:
            return _page_layout(tif, level, dims, ds, vendor)
    except Exception as exc:  # noqa: BLE001 (reported; OpenSlide reads the slide)
        return None, f"tifffile cannot parse it ({type(exc).__name__}: {exc})"


def _page_layout(tif, level, dims, ds, vendor) -> tuple[TileLayout | None, str]:
    pages = [i for i, p in enumerate(tif.pages) if p.is_tiled and p.imagedepth == 1
             and (p.imagewidth, p.imagelength) == dims]
    if len(pages) != 1:
        return None, f"level {level} ({dims[0]} x {dims[1]}): {len(pages)} tiled TIFF pages " \
                     f"of that size (need 1)"
    p = tif.pages[pages[0]]
    what = (f"page {pages[0]}: compression {p.compression.name}, photometric "
            f"{p.photometric.name}, {p.samplesperpixel} x {p.bitspersample} bit")
    if int(p.compression) != 7 or int(p.planarconfig) != 1 or p.bitspersample != 8 \
            or p.samplesperpixel != 3 or int(p.photometric) not in (2, 6):
        return None, f"level {level} {what}: only 8-bit 3-sample contiguous JPEG " \
                     f"(compression 7), photometric RGB or YCbCr, is covered"
    tw, th = int(p.tilewidth), int(p.tilelength)
    across, down = -(-dims[0] // tw), -(-dims[1] // th)
    offsets = np.asarray(p.dataoffsets, dtype=np.int64)
    counts = np.asarray(p.databytecounts, dtype=np.int64)
    if len(offsets) != across * down:
        return None, f"level {level}: {len(offsets)} tiles, expected {across} x {down}"
    tables = bytes(p.jpegtables) if p.jpegtables else None
    layout = TileLayout(pages[0], dims[0], dims[1], tw, th, across, down, offsets, counts,
                        tables, "rgb" if int(p.photometric) == 2 else "ycbcr", ds)
    return layout, f"{vendor} level {level}, {what}, tiles {tw} x {th}" \
                   f"{', JPEGTables' if tables else ''}"


def level_origin(x: int, y: int, level: int, downsample: float) -> tuple[int, int] | None:
    """The patch's top-left pixel at the level if OpenSlide places it on a whole pixel
    (then this path gives its pixels exactly), else None (read it through OpenSlide)."""
    if level == 0:
        return int(x), int(y)
    if x < 0 or y < 0:
        return None
    lx, ly = x / downsample, y / downsample  # as openslide.c computes it
    if lx != int(lx) or ly != int(ly):
        return None
    return int(lx), int(ly)


class TileSource:
    """The tiles of one level in one process: complete JPEG streams (``stream``) and,
    with simplejpeg, decoded tiles (``tile``, cached). Opened lazily; picklable."""

    def __init__(self, slide_path, layout: TileLayout, cache_tiles: int = CACHE_TILES):
        self.slide_path, self.layout, self.cache_tiles = str(slide_path), layout, cache_tiles
        self._fd = self._prefix = None
        self._strip = False
        self._cache: OrderedDict = OrderedDict()

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_prefix": None, "_cache": OrderedDict()}

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._cache.clear()

    def _open(self) -> None:
        """Open the file and decide how tile streams are completed (one probe tile)."""
        lay = self.layout
        self._fd = os.open(self.slide_path, os.O_RDONLY)
        tables = lay.tables
        base = tables[:-2] if tables and tables.endswith(EOI) else (tables or SOI)
        present = np.flatnonzero(lay.counts > 0)
        guess = lay.photometric
        if len(present):
            i = int(present[0])
            tile = os.pread(self._fd, int(lay.counts[i]), int(lay.offsets[i]))
            guess = libjpeg_colour_guess(base + tile[2:] if tables else tile) or guess
        self._strip = guess != lay.photometric
        if self._strip:
            self._prefix = SOI + adobe_app14(0 if lay.photometric == "rgb" else 1) + base[2:]
        else:
            self._prefix = base if tables else b""

    def stream(self, col: int, row: int) -> bytes | None:
        """The complete JPEG stream of tile (col, row); None for a missing tile."""
        if self._fd is None:
            self._open()
        lay = self.layout
        i = row * lay.across + col
        n = int(lay.counts[i])
        if n == 0:
            return None
        raw = os.pread(self._fd, n, int(lay.offsets[i]))
        if self._strip:
            return self._prefix + raw[skip_colour_markers(raw):]
        return self._prefix + raw[2:] if self._prefix else raw

    def tile(self, col: int, row: int, scale: int = 1) -> np.ndarray | None:
        """Tile (col, row) decoded at 1/``scale``, padding past the level's edge black;
        None for a missing tile. Raises on a tile libjpeg cannot decode cleanly."""
        key = (col, row, scale)
        t = self._cache.get(key)
        if t is not None:
            self._cache.move_to_end(key)
            return t
        stream = self.stream(col, row)
        if stream is None:
            return None
        t = decode_tile(stream, self.layout, col, row, scale)
        self._cache[key] = t
        if len(self._cache) > self.cache_tiles:
            self._cache.popitem(last=False)
        return t

    def crop(self, lx: int, ly: int, size: int, scale: int = 1) -> np.ndarray:
        """The (size/scale)^2 x 3 uint8 region whose top-left is level pixel (lx, ly)."""
        lay, k = self.layout, scale
        side = size // k
        out = np.zeros((side, side, 3), np.uint8)
        x0, y0 = lx // k, ly // k  # scaled level pixels (lx, ly divisible by k: see callers)
        stw, sth = lay.tile_w // k, lay.tile_h // k
        c0, c1 = max(x0 // stw, 0), min((x0 + side - 1) // stw, lay.across - 1)
        r0, r1 = max(y0 // sth, 0), min((y0 + side - 1) // sth, lay.down - 1)
        for row in range(r0, r1 + 1):
            for col in range(c0, c1 + 1):
                t = self.tile(col, row, k)
                if t is None:
                    continue
                tx, ty = col * stw, row * sth
                ax0, ay0 = max(tx, x0), max(ty, y0)
                ax1, ay1 = min(tx + stw, x0 + side), min(ty + sth, y0 + side)
                if ax1 > ax0 and ay1 > ay0:
                    out[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = t[ay0 - ty:ay1 - ty,
                                                                   ax0 - tx:ax1 - tx]
        return out


def decode_tile(stream: bytes, lay: TileLayout, col: int, row: int, k: int) -> np.ndarray:
    """simplejpeg (libjpeg-turbo; accurate IDCT and fancy upsampling, as OpenSlide) at 1/k,
    with the padding past the level's right / bottom edge black."""
    import simplejpeg

    tw, th = lay.tile_w, lay.tile_h
    if k == 1:
        t = simplejpeg.decode_jpeg(stream, colorspace="RGB")
    else:
        t = simplejpeg.decode_jpeg(stream, colorspace="RGB", min_width=tw // k,
                                   min_height=th // k, min_factor=k)
    sw, sh = -(-tw // k), -(-th // k)
    if t.shape != (sh, sw, 3):
        raise ValueError(f"tile ({col}, {row}) decoded to {t.shape}, expected {(sh, sw, 3)}")
    vw, vh = (lay.width - col * tw) / k, (lay.height - row * th) / k  # valid extent
    if vw < sw or vh < sh:
        t = np.array(t)  # decoders may return read-only arrays
        for axis, v in ((1, vw), (0, vh)):
            if v < t.shape[axis]:
                full = int(v)
                sl: list = [slice(None), slice(None)]
                if v > full:  # a scaled pixel straddling the edge: its valid fraction
                    sl[axis] = full
                    t[tuple(sl)] = (t[tuple(sl)] * (v - full) + 0.5).astype(np.uint8)
                    full += 1
                sl[axis] = slice(full, None)
                t[tuple(sl)] = 0
    return t


def half_scale_ok(size: int, input_px: int, layout: TileLayout) -> bool:
    """Whether a ``size`` px patch can be decoded at half scale with no upsampling after."""
    return size % 2 == 0 and size // 2 >= input_px and layout.tile_w % 2 == 0 \
        and layout.tile_h % 2 == 0
