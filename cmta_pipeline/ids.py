"""One identifier rule for slide ids, case ids and cohort names (docs/security.md).

An id becomes a file or folder name (``<slide_id>.coords.h5``, ``tiles/<slide_id>/``), a
Snakemake wildcard and a word of a shell command line, so it must be a safe file name on
its own: ASCII letters, digits, ``.``, ``_`` and ``-``; not starting with ``.`` or ``-``
(so never ``.``, ``..``, a hidden file or an option); at most :data:`MAX_LENGTH`
characters. Everything else is refused with one line naming where the id came from
(file and line, or the argument), the id (its ``repr``) and the first character at fault
(with its code point, so that an invisible one is seen). TCGA/TARGET/CPTAC barcodes, GDC
UUIDs, the file names the GDC gives slides and cBioPortal's patient and sample ids pass.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

from .errors import CMTAError

#: The longest id accepted: file names of 255 bytes leave room for the suffixes added.
MAX_LENGTH = 200
ALLOWED = "ASCII letters, digits, '.', '_' and '-', not starting with '.' or '-'"
_VALID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_OK_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "") or unicodedata.category(ch)
    return f"{ch!r} (U+{ord(ch):04X} {name})"


def id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid id (a phrase), or None when it is one."""
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not text"
    if value == "":
        return "is empty"
    bad = next((ch for ch in value if ch not in _OK_CHARS), None)
    if bad is not None:
        return f"contains the character {_describe(bad)}"
    if value[0] in ".-":
        return f"starts with {value[0]!r}"
    if len(value) > MAX_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_LENGTH})"
    return None


def is_valid_id(value: object) -> bool:
    """Whether ``value`` follows the identifier rule."""
    return isinstance(value, str) and len(value) <= MAX_LENGTH and _VALID.fullmatch(value) is not None


def check_id(value: object, what: str = "slide id", where: str = "") -> str:
    """``value`` if it is a valid id, else a :class:`CMTAError` such as ``slides.tsv, line 3:
    slide_id 'a;b' contains the character ';' (U+003B SEMICOLON): ids become file names
    and command words; use ASCII letters, ...``. ``where`` names the source (file and
    line, or the command-line option)."""
    problem = id_problem(value)
    if problem is None:
        return value  # type: ignore[return-value]
    prefix = f"{where}: " if where else ""
    raise CMTAError(f"{prefix}{what} {value!r} {problem}: ids become file names and command "
                    f"words; use {ALLOWED}")


def check_ids(values: Iterable[object], what: str, source: str, lines: Iterable[object] | None = None) -> None:
    """Check every one of ``values`` (a table column); the first bad one is an error naming
    ``source`` and its line (``lines``: the line of each value, default 2, 3, ... below a
    header)."""
    values = list(values)
    lines = list(lines) if lines is not None else [i + 2 for i in range(len(values))]
    for value, line in zip(values, lines):
        if id_problem(value) is not None:
            check_id(value, what, f"{source}, line {line}")
