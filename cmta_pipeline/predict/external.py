"""`cmta external`: a run's fold ensemble, trained on one cohort, predicts every patient of
another cohort (:func:`.risk.predict_run`, the preprocessing of each fold) and is scored
there (:mod:`cmta_pipeline.report.external`: c-index with a bootstrap interval, risk
groups at the train cohort's threshold, KM and log-rank). Outputs (OUTDIR): ``risk.tsv``,
``km.png``/``.svg`` and, last, ``external.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

OUTPUTS = ("risk.tsv", "km.png", "km.svg")


def run_external(run_dir, train_cohort, test_cohort, genomics_dir, outdir, train: str, test: str,
                 features_dir=None, tiles_summary=None, n_boot: int = 1000, seed: int = 1,
                 device: str = "cpu") -> dict:
    """Predict ``test_cohort``'s patients with ``run_dir``'s fold models and score them
    (module doc); writes OUTDIR and returns ``external.json``'s content."""
    from ..fileio import fresh_outputs, write_text_atomic
    from ..report.external import recipe_of_run, score_external, test_patients
    from ..report.figures import plot_km
    from .risk import predict_run, write_predictions

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    survival = test_patients(test_cohort)
    with fresh_outputs(out, OUTPUTS, marker="external.json"):
        risk = predict_run(run_dir, train_cohort, genomics_dir=genomics_dir, features_dir=features_dir,
                           tiles_summary=tiles_summary, impute_missing_genes=True, device=device,
                           cases=list(survival.index))
        pred, scores = score_external(risk, survival, n_boot, seed)
        write_predictions(pred, out / "risk.tsv")
        run = Path(run_dir).name
        plot_km(pred, f"{run}: trained on {train}, tested on {test}", out / "km", scores["logrank_chisq"],
                scores["logrank_p"], subtitle="risk groups at the train cohort's median out-of-fold risk")
        summary = {"run": run, "train": train, "test": test, "protocol": "external",
                   "recipe": recipe_of_run(Path(run_dir)), **scores}
        write_text_atomic(out / "external.json", json.dumps(summary, indent=1) + "\n")
    return summary
