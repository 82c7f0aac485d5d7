"""Survival per patient checked: ``survival_months`` and ``censorship`` (1 = censored),
what a missing or non-positive follow-up means (:func:`check_survival`)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import CMTAError
from .tables import MAX_SURVIVAL_MONTHS, bad_value_text, examples, first_bad_cell

log = logging.getLogger(__name__)


#: Days per month of the published tables: every survival_months of MCAT's BLCA, UCEC
#: and LUAD tables equals round(d / 30.44, 2) for a whole number of days d (cBioPortal's
#: OS_MONTHS convention); 365.25 / 12 fails for about a fifth of them.
DAYS_PER_MONTH = 30.44


#: What to do with a follow-up of zero months or below.
NONPOSITIVE_POLICIES = ("drop", "keep", "error")


#: What to do with a patient without usable survival (``--missing-survival``).
MISSING_POLICIES = ("drop", "error", "keep")


#: Drop reasons of a follow-up of zero or below start with this; every other reason that
#: :func:`check_survival` gives is "no usable survival".
NONPOSITIVE_REASON = "follow-up <= 0"


def missing_survival_error(source: str, where: str, reason: str, n: int) -> CMTAError:
    """The error of ``--missing-survival error``: the first patient, why, how many, and
    how to go on (the flag and the config key)."""
    return CMTAError(
        f"{source}: {where}: no usable survival ({reason}; {n} patient(s) in all); fix the "
        "input, or leave such patients out with --missing-survival drop (config "
        "genomics.missing_survival: drop; they are listed in audit.tsv and dropped.tsv)"
    )


def unusable_survival_audit(source: str, reasons: dict[str, str], policy: str) -> list[tuple[str, str, int, str]]:
    """One summary row: how many patients had no usable survival, what was done, and the
    count per reason (each reason also has its own "patients dropped" row)."""
    if not reasons:
        return []
    counts = pd.Series(list(reasons.values())).value_counts()
    detail = "; ".join(f"{r}: {n}" for r, n in counts.items())
    what = ("kept with empty survival (--missing-survival keep: for prediction only)" if policy == "keep"
            else "dropped (--missing-survival drop)")
    return [(source, f"patients without usable survival: {what}", len(reasons), detail)]


def check_survival(
    surv: pd.DataFrame, source: str, row_label: str = "case_id", missing: str = "drop",
    nonpositive: str = "drop", reasons: pd.Series | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Validate ``survival_months`` and ``censorship``; return (kept rows, dropped).

    ``dropped`` maps each row left out to its reason. ``missing``: rows without a
    survival time or censorship are dropped (``"drop"``, the default) with their reason
    (``reasons``, aligned with ``surv``, from the reader: "Dead without days_to_death",
    ...; else "survival_months missing" / "censorship missing"), an error
    (``"error"``) or kept with empty survival (``"keep"``: new patients, for ``cmta
    predict``). ``nonpositive``: a follow-up of 0 months or below is dropped (``"drop"``,
    the default: reason "follow-up <= 0"), kept when it is 0 (``"keep"``: an event or
    censoring at time 0 is valid for scikit-survival; below 0 stays an error) or an
    error (``"error"``). With ``missing="keep"`` a row that ``"drop"`` would leave out
    keeps its genomics with an empty survival instead (new patients are predicted).
    """
    if nonpositive not in NONPOSITIVE_POLICIES:
        raise CMTAError(f"nonpositive_followup: {nonpositive!r} is not one of {', '.join(NONPOSITIVE_POLICIES)}")
    surv = surv.copy()
    where = lambda i: f"{row_label} {i}".strip()  # noqa: E731
    for col in ("survival_months", "censorship"):
        surv[col] = _as_number(surv[col], col, source, where)
    _check_months(surv["survival_months"], source, where)
    missing_rows = surv["survival_months"].isna() | surv["censorship"].isna()
    dropped: dict[str, str] = {}
    if missing == "keep":
        known = surv[~missing_rows]
        if len(known):
            checked, blanked = check_survival(known, source, row_label, "error", nonpositive)
            if blanked:  # new patients are kept for prediction; only their follow-up goes
                log.warning("%s: %d rows with a follow-up <= 0 kept with empty survival (%s)",
                            source, len(blanked), examples(blanked, 3))
                missing_rows[list(blanked)] = True
            surv.loc[~missing_rows, "survival_months"] = checked["survival_months"]
        surv.loc[missing_rows, ["survival_months", "censorship"]] = np.nan
        if not missing_rows.any():
            surv["censorship"] = surv["censorship"].astype(int)
        return surv, dropped
    if missing not in MISSING_POLICIES:
        raise CMTAError(f"missing_survival: {missing!r} is not one of {', '.join(MISSING_POLICIES)}")
    if missing_rows.any():
        why = {}
        for i in surv.index[missing_rows]:
            given = reasons.get(i) if reasons is not None else None
            col = "survival_months" if pd.isna(surv.at[i, "survival_months"]) else "censorship"
            why[i] = given if isinstance(given, str) and given else f"{col} missing"
        if missing == "error":
            i = surv.index[missing_rows][0]
            raise missing_survival_error(source, where(i), why[i], int(missing_rows.sum()))
        dropped.update({str(i): r for i, r in why.items()})
        surv = surv[~missing_rows]
    surv = _drop_nonpositive(surv, nonpositive, source, where, dropped)
    badc = ~surv["censorship"].isin([0, 1])
    if badc.any():
        i = badc.idxmax()
        raise CMTAError(
            f"{source}: {where(i)}: censorship is {float(surv.at[i, 'censorship']):g} "
            "(must be 0 = event or 1 = censored)"
        )
    surv["censorship"] = surv["censorship"].astype(int)
    surv["survival_months"] = surv["survival_months"].astype(float)
    return surv, dropped


def _as_number(raw: pd.Series, col: str, source: str, where) -> pd.Series:
    """``raw`` as numbers; a cell that is not one is an error naming its row."""
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
    if bad.any():
        i = bad.idxmax()
        raise CMTAError(f"{source}: {where(i)}: {col} {raw[i]!r} is not a number")
    return num


def _check_months(months: pd.Series, source: str, where) -> None:
    """An infinite follow-up or one over :data:`MAX_SURVIVAL_MONTHS` (100 years) is an
    error naming the row (a missing one is handled by ``missing_survival``)."""
    at = first_bad_cell(months.to_numpy(dtype=float), MAX_SURVIVAL_MONTHS)
    if at is not None:
        i = months.index[at[0]]
        raise CMTAError(
            f"{source}: {where(i)}: survival_months {bad_value_text(float(months[i]), MAX_SURVIVAL_MONTHS)}; "
            "follow-up is in months, at most 1200 (100 years)"
        )


def _drop_nonpositive(surv: pd.DataFrame, nonpositive: str, source: str, where, dropped: dict) -> pd.DataFrame:
    """``surv`` without the follow-ups <= 0 that ``nonpositive`` leaves out (recorded in
    ``dropped``); an error where it says so, and for a negative follow-up kept."""
    times = surv["survival_months"]
    nonpos = (times < 0) | ((times == 0) & (nonpositive != "keep"))
    if nonpos.any():
        i = nonpos.idxmax()
        t = float(surv.at[i, "survival_months"])
        if nonpositive == "error" or t < 0 and nonpositive == "keep":
            hint = (
                "a negative follow-up cannot be kept" if nonpositive == "keep"
                else "set nonpositive_followup: drop (or keep, for zero) to go on"
            )
            raise CMTAError(
                f"{source}: {where(i)}: survival_months is {t:g} (must be > 0 months; {hint})"
            )
        for i in surv.index[nonpos]:
            dropped[str(i)] = f"{NONPOSITIVE_REASON} (survival_months {float(surv.at[i, 'survival_months']):g})"
        surv = surv[~nonpos]
    return surv
