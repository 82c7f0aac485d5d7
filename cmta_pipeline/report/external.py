"""External validation (``cmta external``, run by :mod:`cmta_pipeline.predict.external`;
config ``external: [{train: A, test: B}]``):
every fold model of a run trained on cohort A predicts every patient of cohort B, and the
fold ensemble's risk is scored on B.

The prediction is ``cmta predict``'s (:func:`cmta_pipeline.predict.risk.predict_run`): each
fold model's own preprocessing (its training rows' statistics), genes the models read but
B lacks filled with each fold's training median (counted per patient in ``genes_imputed``),
risk averaged over the fold models. Scored on B's patients (its ``cohort.tsv``: survival
and event):

* Harrell's c-index of the ensemble risk with a 95 % percentile interval from ``n_boot``
  bootstrap resamples of B's patients (seeded; :func:`.paired.weighted_cindex`, the same
  pair arithmetic as the paired comparisons);
* risk groups at A's threshold: ``high`` when the risk is above the median of A's
  out-of-fold risks (mean percentile over the fold models > 50, ``cmta predict``'s group),
  so B's patients are split by a threshold B did not set; Kaplan-Meier and log-rank.

Outputs (OUTDIR): ``risk.tsv`` (``cmta predict``'s table plus time and event),
``km.png``/``.svg`` and, last, ``external.json`` (what table 1's ``protocol: external``
rows show).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from .paired import pair_matrices, weighted_cindex


def bootstrap_cindex(time, event, risk, n_boot: int = 1000, seed: int = 1) -> tuple[float, float, float]:
    """(Harrell's c-index, 2.5th and 97.5th percentiles over ``n_boot`` resamples of the
    patients); the interval is NaN when ``n_boot`` is 0."""
    comp, score = pair_matrices(time, event, risk)
    n = len(np.asarray(risk))
    c = float(weighted_cindex(comp, score, np.ones(n))[0])
    if n_boot <= 0:
        return c, math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    boot = weighted_cindex(comp, score, draws)
    boot = boot[~np.isnan(boot)]
    if not len(boot):
        return c, math.nan, math.nan
    return c, float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def test_patients(test_cohort: str | os.PathLike) -> pd.DataFrame:
    """case_id -> time, event of the test cohort (its ``cohort.tsv``)."""
    path = Path(test_cohort) / "cohort.tsv"
    if not path.is_file():
        raise CMTAError(f"{path}: missing; give the test cohort's `cmta cohort` folder")
    df = pd.read_csv(path, sep="\t", dtype={"case_id": str}).set_index("case_id")
    return pd.DataFrame({"time": df["survival_months"].astype(float), "event": 1 - df["censorship"].astype(int)})


def score_external(risk: pd.DataFrame, survival: pd.DataFrame, n_boot: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """(risk rows with time, event and group; the scores of :mod:`this module <.external>`)."""
    from .metrics import logrank

    pred = risk.join(survival, on="case_id", how="inner")
    if len(pred) < len(risk):
        raise CMTAError(f"{len(risk) - len(pred)} predicted patient(s) are not in the test cohort")
    pred = pred.assign(group=(pred["risk_group"] == "high").astype(int))
    c, lo, hi = bootstrap_cindex(pred["time"], pred["event"], pred["risk"], n_boot, seed)
    chisq, p = logrank(pred["time"], pred["event"], pred["group"])
    imputed = pred["genes_imputed"] if "genes_imputed" in pred else pd.Series(0, index=pred.index)
    scores = {
        "cindex_harrell": c, "ci_low": lo, "ci_high": hi, "n_boot": int(n_boot), "seed": int(seed),
        "n_patients": int(len(pred)), "n_events": int(pred["event"].sum()),
        "n_high": int(pred["group"].sum()), "logrank_chisq": chisq, "logrank_p": p,
        "n_folds": int(pred["n_folds"].iloc[0]) if len(pred) else 0,
        "patients_with_imputed_genes": int((imputed > 0).sum()),
        "genes_imputed_max": int(imputed.max()) if len(pred) else 0,
        "genes_filled_with": "each fold's training median (cmta predict --impute-missing-genes)",
        "threshold": "the train cohort's median out-of-fold risk (cmta predict's risk_group)",
    }
    return pred, scores


def recipe_of_run(run_dir: Path) -> str:
    """The training recipe of the run's folds (summary.json "recipe", default cmta)."""
    seen = [json.loads(f.read_text()).get("recipe", "cmta") for f in sorted(run_dir.glob("fold_*/summary.json"))]
    return "/".join(dict.fromkeys(map(str, seen))) or "cmta"


def external_rows(external_dir: str | os.PathLike) -> list[dict]:
    """Table 1 rows (``protocol: external``) of every ``<pair>/<run>/external.json`` under
    ``external_dir``: Harrell's c-index of the fold ensemble on the test cohort with its
    bootstrap interval, the number of test patients, those with genes filled, the log-rank p
    at the train cohort's threshold."""
    rows = []
    for f in sorted(Path(external_dir).glob("*/*/external.json")):
        s = json.loads(f.read_text())
        rows.append({"cohort": f"{s['train']}->{s['test']}", "run": s["run"], "recipe": s.get("recipe", "cmta"),
                     "protocol": "external", "optimistic": False, "metric": "cindex_harrell",
                     "mean": s["cindex_harrell"], "sd": math.nan, "sd_ddof": math.nan, "n_folds": s["n_folds"],
                     "ci_low": s["ci_low"], "ci_high": s["ci_high"], "n_patients": s["n_patients"],
                     "logrank_p": s["logrank_p"], "imputed_patients": s["patients_with_imputed_genes"]})
    return rows
