"""Where a slide's features go while it is encoded: memory (:class:`MemorySink`), or a
partial file on disk that a killed run resumes from (:class:`PartialFeatures`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import fileio
from .encoder import FEATURE_DIM

ROW_BYTES = FEATURE_DIM * 4  # one float32 feature vector of ResNet-50


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
    Each batch is appended to the data, then the JSON is replaced atomically, so the JSON
    never counts a row that is not on disk; rows beyond its count are cut on resume. A
    rerun with other settings (weights, coords, batch size, threads, precision, compiled
    or not, package versions ...) starts again from row 0.
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
        self._settings: dict = {}
        self._f = None

    def resume(self, settings: dict) -> dict | None:
        """The saved state if it was made with ``settings`` and its rows are on disk."""
        try:
            state = json.loads(self.json.read_text())
            rows = int(state["rows"])
            ok = (state.get("settings") == settings and 0 < rows <= self.n
                  and self.data.stat().st_size >= rows * self.row_bytes)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return state if ok else None

    def begin(self, settings: dict, state: dict) -> None:
        """Open for appending after ``state["rows"]`` rows (0: start afresh)."""
        self.close()
        self._settings = settings
        self.state = {k: v for k, v in state.items() if k not in ("rows", "failed", "settings")}
        self.rows = int(state.get("rows", 0))
        self.failed = list(state.get("failed", []))
        self.data.parent.mkdir(parents=True, exist_ok=True)
        if self.rows == 0:
            self.json.unlink(missing_ok=True)
            self._f = open(self.data, "wb")
        else:
            self._f = open(self.data, "r+b")
            self._f.truncate(self.rows * self.row_bytes)
            self._f.seek(self.rows * self.row_bytes)

    def append(self, feats: np.ndarray, failed: list[int]) -> None:
        self._f.write(np.ascontiguousarray(feats, dtype=np.float32).tobytes())
        self._f.flush()  # in the page cache: survives the process being killed
        self.rows += len(feats)
        self.failed += failed
        fileio.write_text_atomic(self.json, json.dumps({
            "rows": self.rows, "failed": self.failed, **self.state,
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
