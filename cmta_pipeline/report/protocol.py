"""Evaluation protocols: ``honest`` (default) and ``paper`` (the authors' evaluation).

``protocol: paper`` is one switch that reproduces how the published c-indices were
obtained (FT-ZHOU-ZZZ/CMTA ``run.sh`` and ``main.py``):

* ``cohort.labels_from: all``: the four survival bins are cut on the whole cohort,
  held-out patients included;
* ``training.selection: best_heldout``: the reported epoch is the one with the best
  c-index on the held-out fold itself;
* ``genomics.drop_last_column: true``: the table's last column is not used, as their
  dataset code does;
* ``training.alpha``: the alignment weight of their run script for the study
  (BLCA 1, BRCA 100, GBMLGG 1, LUAD 1e-4, UCEC 1).

Choosing the epoch on the reported fold is optimistic; every run made this way is marked
OPTIMISTIC (``summary.json``, ``model.pt``, logs and report carry ``optimistic: true``).
``honest`` changes nothing: bins from each fold's training rows, the last epoch.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from ..errors import CMTAError

PROTOCOLS = ("honest", "paper")

#: ``--alpha`` per TCGA study in the authors' run.sh
PAPER_ALPHA: dict[str, float] = {
    "blca": 1.0, "brca": 100.0, "gbmlgg": 1.0, "luad": 1e-4, "ucec": 1.0,
}

#: what ``protocol: paper`` sets besides alpha
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    # their dataset code moves a table's last column into its metadata (BLCA, LUAD:
    # ZXDC_rnaseq is never used); docs/genomics.md
    "genomics": {"drop_last_column": True},
    "cohort": {"labels_from": "all"},
    "training": {"selection": "best_heldout"},
}

LABEL = {"honest": "honest", "paper": "OPTIMISTIC (protocol: paper, epoch chosen on the reported fold)"}


def study_of(config: dict) -> str | None:
    """The TCGA study of a config: ``study`` if set, else read from the genomic table's
    file name (``tcga_<study>_...``, as the published tables are named); None if neither."""
    study = config.get("study")
    if study:
        return str(study).lower()
    table = (config.get("genomics") or {}).get("table")
    if table:
        match = re.match(r"tcga_([a-z]+)_", Path(str(table)).name.lower())
        if match and match.group(1) in PAPER_ALPHA:
            return match.group(1)
    return None


def resolve_protocol(config: dict) -> tuple[dict, list[str]]:
    """Apply ``config["protocol"]`` to a (validated) config.

    Returns a new config (the input is not changed) and one line per setting that the
    protocol changed, for the log. ``honest`` (or no key) returns the config as it is.
    ``paper`` needs the study for its alpha (``study``, or a genomic table named
    ``tcga_<study>_*``); otherwise a one-line error naming the key.
    """
    protocol = config.get("protocol") or "honest"
    if protocol not in PROTOCOLS:
        raise CMTAError(f"protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    out = copy.deepcopy(config)
    if protocol == "honest":
        return out, []
    study = study_of(config)
    if study not in PAPER_ALPHA:
        raise CMTAError(
            "protocol: paper needs the TCGA study for its alpha: set study: to one of "
            f"{', '.join(PAPER_ALPHA)} (got {study!r}; genomics.table is not named tcga_<study>_*)"
        )
    changes = {**{s: dict(v) for s, v in PAPER_SETTINGS.items()}}
    changes["training"]["alpha"] = PAPER_ALPHA[study]
    notes = []
    for section, values in changes.items():
        target = out.setdefault(section, {})
        for key, value in values.items():
            before = target.get(key)
            target[key] = value
            notes.append(f"protocol: paper sets {section}.{key} = {value}"
                         + (f" (was {before})" if before is not None and before != value else "")
                         + " -- OPTIMISTIC")
    return out, notes


def protocol_label(config: dict) -> str:
    """``honest`` or the OPTIMISTIC label to print beside results of ``protocol: paper``."""
    return LABEL.get(config.get("protocol") or "honest", "honest")


def sd_ddof(protocol: str) -> int:
    return 0 if protocol == "paper" else 1
