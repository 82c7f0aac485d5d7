"""Evaluation protocols: ``honest`` (default) and ``paper`` (the authors' evaluation).

``protocol: paper`` is one switch that reproduces how the published c-indices were
obtained (FT-ZHOU-ZZZ/CMTA ``run.sh`` and ``main.py``):

* ``cohort.labels_from: all``: the four survival bins are cut on the whole cohort,
  held-out patients included;
* ``training.selection: best_heldout``: the reported epoch is the one with the best
  c-index on the held-out fold itself;
* ``genomics.drop_last_column: true``: the table's last column is not used, as their
  dataset code does;
* ``cohort.drop_constant: false``: columns constant on a fold's training rows are kept
  (centred, scale 1, as their ``StandardScaler``), so every fold has their input sizes;
* ``training.amp: false``: fp32 training on CUDA, as they trained;
* ``training.alpha``: the alignment weight of their run script for the study
  (BLCA 1, BRCA 100, GBMLGG 1, LUAD 1e-4, UCEC 1).

Choosing the epoch on the reported fold, and cutting the bins on the whole cohort
(``cohort.labels_from: all``, even with ``selection: final``), are optimistic; every run
made either way is marked OPTIMISTIC (``summary.json``, ``model.pt``, logs and report carry
``optimistic: true`` and the reasons). The report's sd over folds is the paper's
``np.std`` (ddof 0) for ``paper`` runs, ddof 1 for ``honest`` ones (:func:`sd_ddof`).
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
    # their StandardScaler keeps columns constant on the training rows (centred, scale 1)
    "cohort": {"labels_from": "all", "drop_constant": False},
    # they trained in fp32 (no autocast)
    "training": {"selection": "best_heldout", "amp": False},
}

#: why a run is OPTIMISTIC, by the setting that makes it so
OPTIMISTIC_REASONS = {
    "selection": "epoch chosen on the reported fold (training.selection: best_heldout)",
    "labels_from": "survival bins cut on the whole cohort, held-out times included "
                   "(cohort.labels_from: all)",
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
    protocol changed, for the log. ``honest`` (or no key) returns the config as it is (with
    one OPTIMISTIC note when ``cohort.labels_from`` is ``all``).
    ``paper`` needs the study for its alpha (``study``, or a genomic table named
    ``tcga_<study>_*``); otherwise a one-line error naming the key.
    """
    protocol = config.get("protocol") or "honest"
    if protocol not in PROTOCOLS:
        raise CMTAError(f"protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    out = copy.deepcopy(config)
    if protocol == "honest":
        labels = (config.get("cohort") or {}).get("labels_from")
        return out, ([f"cohort.labels_from = all -- OPTIMISTIC: {OPTIMISTIC_REASONS['labels_from']}"]
                     if labels == "all" else [])
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


def optimistic_reasons(selection: str | None, labels_from: str | None) -> list[str]:
    """Why a run's numbers are optimistic (empty: they are not): the epoch chosen on the
    reported fold, and/or the bins cut on the whole cohort."""
    return ([OPTIMISTIC_REASONS["selection"]] if selection == "best_heldout" else []) + (
        [OPTIMISTIC_REASONS["labels_from"]] if labels_from == "all" else [])


def sd_ddof(protocol: str) -> int:
    return 0 if protocol == "paper" else 1
