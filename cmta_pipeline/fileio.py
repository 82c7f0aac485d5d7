"""Atomic output files: nothing half-written is ever left under its final name, and no
previous run's outputs left beside a failed run's (:func:`fresh_outputs`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

from .errors import CMTAError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    The temporary name keeps the final suffix (so writers that pick a format by
    extension, such as ``cv2.imwrite``, still work) and starts with a dot so that
    globbing for outputs never picks it up. On any exception the temporary file is
    removed and the exception propagates; an existing file at ``path`` is untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the file the permissions an ordinary open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


class OutputLocked(CMTAError):
    """Another run is writing the same output (:func:`output_lock`)."""


class Glob(str):
    """A name of :func:`fresh_outputs` that is a glob pattern (``Glob("km_*.png")``): only
    names the code spells out as patterns are globbed. Every other name (one made from a
    slide id, a file name, an argument) is taken literally, ``*?[`` included."""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _inside(folder: Path, name) -> Path:
    """``folder/name``, refused unless it stays inside ``folder`` (no ``..``, no absolute
    name), so that a command never removes what lies outside its own output folder."""
    path = Path(folder, name)
    if Path(name).is_absolute() or ".." in Path(name).parts or not str(name).strip():
        raise CMTAError(f"{folder}: output name {str(name)!r} is not a name inside the output folder")
    return path


def _previous(folder: Path, names) -> list[Path]:
    """The paths ``names`` stand for under ``folder``: a :class:`Glob` is a pattern, any
    other name is exact (checked to stay inside ``folder``)."""
    found = []
    for name in names:
        path = _inside(folder, name)
        if isinstance(name, Glob):
            found += sorted(path.parent.glob(path.name))
        else:
            found.append(path)
    return found


@contextlib.contextmanager
def fresh_outputs(
    folder: str | os.PathLike, names=(), marker: str | os.PathLike | None = None
) -> Iterator[Path]:
    """Run the body of a command that writes ``names`` and, last, ``marker`` (the file
    whose presence says the run finished) under ``folder``; yield ``folder``.

    First the output is locked (:func:`output_lock`): a second run writing the same output
    at the same time is refused with one line naming the first (pid, host), so a folder
    is always one run's. Then the previous run's ``marker`` is removed, then its outputs
    ``names`` (files or folders inside ``folder``; :class:`Glob` patterns such as
    ``Glob("km_*.png")``; absent ones are fine). A marker that is an existing folder is
    refused, not emptied (``cmta predict -o results/``). If the body raises, whatever it
    wrote of them is removed again and the exception propagates. So a run that fails,
    whenever it fails, leaves nothing that a later step or a rerun could take for a
    finished one. Each file is still written with :func:`atomic_output`, the marker last.
    ``marker`` may be an absolute path (``cmta tile``'s status file, a file of its own).
    Files a rerun should find again (a training run's resume state, a slide's partial
    features) are simply not listed.
    """
    folder = Path(folder)
    marker_path = None if marker is None else (
        Path(marker) if Path(marker).is_absolute() else _inside(folder, marker))
    if marker_path is not None and marker_path.is_dir() and not marker_path.is_symlink():
        raise CMTAError(f"{marker_path}: is an existing folder; the output is a file: give a file "
                        "name (the folder and what it holds are left as they are)")
    listed = [marker_path] if marker_path is not None else []
    _previous(folder, names)  # every name checked before anything is locked or removed
    created = not folder.exists()
    try:
        with output_lock(folder if marker_path is None else marker_path.parent,
                         ".cmta.lock" if marker_path is None else f".{marker_path.name}.lock"):
            for path in listed + _previous(folder, names):
                _remove(path)
            try:
                yield folder
            except BaseException:
                for path in listed + _previous(folder, names):
                    _remove(path)
                raise
    finally:
        if created:  # a folder this run made and left empty goes too
            with contextlib.suppress(OSError):
                folder.rmdir()


_HELD: dict[str, int] = {}


@contextlib.contextmanager
def output_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/name`` (created, then removed on exit) while
    the body runs; if another process holds it, a :class:`CMTAError` naming it (the pid,
    host and start time it wrote into the lock file). Re-entrant within one process. The
    kernel drops the lock of a process that dies, so a killed run blocks no one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    key = os.path.abspath(path)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    fd = _acquire(path)
    _HELD[key] = 1
    try:
        yield
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: a waiting run then makes a new file
        os.close(fd)


def _acquire(path: Path) -> int:
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 400).decode(errors="replace").strip() or "another run"
            os.close(fd)
            raise OutputLocked(f"{path.parent}: its output is being written by {holder} (lock file "
                            f"{path}); wait for that run to end, or write elsewhere") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the holder removed it as it finished: lock the new one
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()} since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            return fd
        os.close(fd)
    raise CMTAError(f"{path}: could not take the lock file")


def remove_outputs(folder: str | os.PathLike, names) -> None:
    """Remove ``names`` under ``folder`` (files or folders, :class:`Glob` patterns; in the
    order given: a completion marker first), never anything outside ``folder``."""
    for path in _previous(Path(folder), names):
        _remove(path)
