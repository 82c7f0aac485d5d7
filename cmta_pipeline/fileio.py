"""Atomic output files: nothing half-written is ever left under its final name, and no
previous run's outputs left beside a failed run's (:func:`fresh_outputs`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _previous(folder: Path, names) -> list[Path]:
    """The paths ``names`` stand for under ``folder``: a name whose last part has ``*``,
    ``?`` or ``[`` is a glob pattern; an absolute path is taken as it is."""
    found = []
    for name in names:
        path = Path(folder, name)
        if any(ch in path.name for ch in "*?["):
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

    On entry the previous run's ``marker`` is removed first, then its outputs ``names``
    (files or folders; glob patterns such as ``km_*.png``; absolute paths are used as
    they are; absent ones are fine). If the body raises, whatever it wrote of them is
    removed again and the exception propagates. So a run that fails, whenever it fails,
    leaves nothing that a later step or a rerun could take for a finished one. Each file
    is still written with :func:`atomic_output`, the marker last. Files a rerun should
    find again (a training run's resume state, a slide's partial features) are simply
    not listed.
    """
    folder = Path(folder)
    listed = ([marker] if marker is not None else []) + list(names)
    remove_outputs(folder, listed)
    try:
        yield folder
    except BaseException:
        remove_outputs(folder, listed)
        raise


def remove_outputs(folder: str | os.PathLike, names) -> None:
    """Remove ``names`` under ``folder`` (files or folders, glob patterns, absolute paths;
    in the order given: a completion marker first)."""
    for path in _previous(Path(folder), names):
        _remove(path)
