"""Where a slide's features go while it is encoded: memory (:class:`MemorySink`), or a
partial file on disk that a killed run resumes from (:class:`PartialFeatures`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from .. import fileio
from .encoder import FEATURE_DIM

ROW_BYTES = FEATURE_DIM * 4  # one float32 feature vector of ResNet-50

log = logging.getLogger(__name__)


class MemorySink:
    """Features of every patch, row by row, in one preallocated (N, D) float32 array."""

    def __init__(self, n: int, dim: int = FEATURE_DIM):
        self.features = np.zeros((n, dim), np.float32)
        self.rows = 0
        self.failed: list[int] = []
        self.state: dict = {}

    def resume(self, settings: dict) -> dict | None:
        return None

    def begin(self, settings: dict, state: dict) -> None:
        self.rows, self.failed, self.state = 0, [], dict(state)

    def append(self, feats: np.ndarray, failed: list[int]) -> None:
        self.features[self.rows:self.rows + len(feats)] = feats
        self.rows += len(feats)
        self.failed += failed

    def result(self) -> np.ndarray:
        return self.features

    def discard(self) -> None:
        pass


class PartialFeatures:
    """A slide's features so far, on disk, so that a killed extraction resumes.

    Two hidden files beside the outputs: ``.<id>.features.partial`` (float32 rows, 4 bytes
    x D each, in patch order) and ``.<id>.features.partial.json`` (how many rows are complete,
    the failed patch indices, the check's outcome, and the settings that produced them).
    Each batch is appended to the data, flushed and fsynced, then the JSON is replaced
    atomically with the batch's sha256 added to its ``chunks`` (``[end row, sha256]`` per
    batch), so the JSON never counts a row that is not on disk; rows beyond its count are
    cut on resume. On resume every chunk is hashed again: a partial whose rows changed
    since (zeroed blocks after a crash, a truncated or edited file), or one without
    checksums, is discarded with a warning and the slide is encoded again. A rerun with
    other settings (weights, coords, batch size, threads, precision, compiled or not,
    package versions ...) starts again from row 0.
    """

    def __init__(self, outdir, slide_id: str, n: int, dim: int = FEATURE_DIM):
        outdir = Path(outdir)
        self.dim = dim
        self.row_bytes = dim * 4
        self.data = outdir / f".{slide_id}.features.partial"
        self.json = outdir / f".{slide_id}.features.partial.json"
        self.n = n
        self.rows = 0
        self.failed: list[int] = []
        self.state: dict = {}
        self.chunks: list[list] = []  # [end row, sha256 of the batch's bytes] per batch
        self._settings: dict = {}
        self._f = None

    def resume(self, settings: dict) -> dict | None:
        """The saved state if it was made with ``settings`` and its rows are on disk,
        unchanged (every chunk's sha256 checked); else None (the slide starts again)."""
        try:
            state = json.loads(self.json.read_text())
            rows = int(state["rows"])
            ok = (state.get("settings") == settings and 0 < rows <= self.n
                  and self.data.stat().st_size >= rows * self.row_bytes)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not ok:
            return None
        bad = self._first_bad_chunk(state.get("chunks"), rows)
        if bad is not None:
            log.warning("%s: partial features fail their checksum (%s); discarded, the slide "
                        "is encoded again", self.data, bad)
            return None
        return state

    def _first_bad_chunk(self, chunks, rows: int) -> str | None:
        """Why the first ``rows`` rows on disk cannot be trusted, or None when every
        chunk's bytes hash to what was recorded when it was written."""
        if not isinstance(chunks, list) or not chunks:
            return "no checksums recorded"
        start = 0
        try:
            with open(self.data, "rb") as fh:
                for end, digest in chunks:
                    end = int(end)
                    if not start < end <= rows:
                        return f"chunk ending at row {end} out of order"
                    block = fh.read((end - start) * self.row_bytes)
                    if hashlib.sha256(block).hexdigest() != digest:
                        return f"rows {start}..{end - 1} changed"
                    start = end
        except (OSError, TypeError, ValueError) as exc:
            return f"{type(exc).__name__}"
        return None if start == rows else f"checksums cover {start} of {rows} rows"

    def begin(self, settings: dict, state: dict) -> None:
        """Open for appending after ``state["rows"]`` rows (0: start afresh)."""
        self.close()
        self._settings = settings
        self.state = {k: v for k, v in state.items() if k not in ("rows", "failed", "settings", "chunks")}
        self.rows = int(state.get("rows", 0))
        self.failed = list(state.get("failed", []))
        self.chunks = [list(c) for c in state.get("chunks", [])] if self.rows else []
        self.data.parent.mkdir(parents=True, exist_ok=True)
        if self.rows == 0:
            self.json.unlink(missing_ok=True)
            self._f = open(self.data, "wb")
        else:
            self._f = open(self.data, "r+b")
            self._f.truncate(self.rows * self.row_bytes)
            self._f.seek(self.rows * self.row_bytes)

    def append(self, feats: np.ndarray, failed: list[int]) -> None:
        block = np.ascontiguousarray(feats, dtype=np.float32).tobytes()
        self._f.write(block)
        self._f.flush()  # in the page cache: survives the process being killed
        os.fsync(self._f.fileno())  # on disk before the record counts it: survives a crash
        self.rows += len(feats)
        self.failed += failed
        self.chunks.append([self.rows, hashlib.sha256(block).hexdigest()])
        fileio.write_text_atomic(self.json, json.dumps({
            "rows": self.rows, "failed": self.failed, **self.state, "chunks": self.chunks,
            "settings": self._settings}))

    def result(self) -> np.ndarray:
        """All N rows, (N, D) float32 (the output itself: the one full copy in memory)."""
        self.close()
        feats = np.fromfile(self.data, dtype=np.float32, count=self.n * self.dim)
        return feats.reshape(self.n, self.dim)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def discard(self) -> None:
        self.close()
        self.data.unlink(missing_ok=True)
        self.json.unlink(missing_ok=True)
