"""Genomics-only models on the real TCGA tables (BLCA, UCEC), published 5-fold splits.

    python tests/benchmarks/blca_genomics_models.py [--cohort blca|ucec]
           [--models snn,snntrans,mcat_omic,coxnet] [--epochs 30] [--workdir DIR] [--threads 1]
           [--labels-from train|all] [--no-standardize] [--set KEY=VALUE ...]
           [--option KEY=VALUE ...] [--tag NAME]

Runs `cmta genomics` (UCEC with `--unsuffixed mut`: its table has unsuffixed mutation
columns) and `cmta cohort` (labels fitted on each fold's train rows unless
`--labels-from all`; an inner validation split only with --inner-val-fraction), then
`run_fold` (what `cmta train` calls) with the published settings (SGD, lr 1e-3, momentum
0.9, weight decay 1e-5, weighted sampler, 30 epochs, seed 1) unless `--set` overrides them.
`--option` passes a model build option (e.g. `--option depth=4`).

`coxnet` is the linear floor: elastic-net Cox (scikit-survival, l1_ratio 0.5) on the same
cohort files (the six families concatenated), default penalty path, prediction at its
smallest penalty: no selection at all.

Honest protocol: the model after the last epoch, evaluated once on the held-out fold.
For comparison only, the same runs' best held-out c-index over the epochs (the released
code's protocol, OPTIMISTIC: the reported fold picks the epoch) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cmta_pipeline.cli import main as cmta  # noqa: E402
from cmta_pipeline.training import TrainSettings  # noqa: E402
from cmta_pipeline.training.fold import run_fold  # noqa: E402

TCGA = REPO.parent / "shared" / "data" / "tcga"
#: extra `cmta genomics` arguments per cohort (given explicitly, see the module docstring)
GENOMICS_ARGS = {"blca": [], "ucec": ["--unsuffixed", "mut"]}


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def coxnet_fold(cohort: Path, fold: int) -> float:
    """Held-out c-index of the elastic-net Cox model (defaults, smallest penalty)."""
    from sksurv.linear_model import CoxnetSurvivalAnalysis
    from sksurv.metrics import concordance_index_censored
    from sksurv.util import Surv

    from cmta_pipeline.cohort import load_fold

    fd = load_fold(cohort, fold)
    p = fd.patients
    tr, ho = p[p["split"] == "train"], p[p["split"] == "heldout"]
    x_tr = np.stack([np.concatenate(fd.omics[c]) for c in tr.index]).astype(np.float64)
    x_ho = np.stack([np.concatenate(fd.omics[c]) for c in ho.index]).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CoxnetSurvivalAnalysis(l1_ratio=0.5, max_iter=100000).fit(
            x_tr, Surv.from_arrays(tr["event"].astype(bool), tr["survival_months"]))
    return concordance_index_censored(ho["event"].astype(bool), ho["survival_months"],
                                      m.predict(x_ho))[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cohort", choices=sorted(GENOMICS_ARGS), default="blca")
    ap.add_argument("--models", default="snn,snntrans")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--workdir", default=None, help="default /tmp/<cohort>_bench")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a TrainSettings field, e.g. --set optimizer=adam --set lr=2e-4")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="model build option, e.g. --option depth=4")
    ap.add_argument("--tag", default="published", help="name of this settings variant (output folder)")
    ap.add_argument("--labels-from", choices=["train", "all"], default="train")
    ap.add_argument("--no-standardize", action="store_true")
    ap.add_argument("--inner-val-fraction", type=float, default=0.0,
                    help="cohort: share of each training fold held out for early stopping")
    a = ap.parse_args()
    overrides = {}
    for kv in a.set:
        key, value = kv.split("=", 1)
        kind = type(getattr(TrainSettings(), key))
        overrides[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    options = {kv.split("=", 1)[0]: _value(kv.split("=", 1)[1]) for kv in a.option}
    settings = TrainSettings(**{"epochs": a.epochs, **overrides})
    print(f"settings {a.tag}: {settings.as_dict()} options {options}", flush=True)
    torch.set_num_threads(a.threads)
    cohort_args = ["--labels-from", a.labels_from, "--inner-val-fraction", str(a.inner_val_fraction)]
    if a.no_standardize:
        cohort_args.append("--no-standardize")
    work = Path(a.workdir or f"/tmp/{a.cohort}_bench")
    cohort = work / ("cohort_" + "_".join(c.lstrip("-") for c in cohort_args).replace(".", "p"))
    if not (work / "genomics" / "patients.tsv").is_file():
        assert cmta(["genomics", str(TCGA / f"tcga_{a.cohort}_all_clean.csv.gz"),
                     "--families", str(TCGA / "signatures.csv"), "-o", str(work / "genomics"),
                     *GENOMICS_ARGS[a.cohort]]) == 0
    if not (cohort / "folds.json").is_file():
        assert cmta(["cohort", str(work / "genomics"), "-o", str(cohort),
                     "--splits", str(TCGA / f"splits/5foldcv/tcga_{a.cohort}"), *cohort_args]) == 0
    n_folds = json.loads((cohort / "folds.json").read_text())["n_folds"]
    rows = []
    for model in a.models.split(","):
        for fold in range(n_folds):
            t0 = time.perf_counter()
            if model == "coxnet":
                c = coxnet_fold(cohort, fold)
                rows.append({"variant": a.tag, "model": model, "fold": fold, "honest_final": c,
                             "optimistic_best_epoch": np.nan, "best_epoch": 0,
                             "seconds": time.perf_counter() - t0})
                print(rows[-1], flush=True)
                continue
            out = work / "train" / a.tag / model / f"fold_{fold}"
            s = run_fold(cohort, fold, model, out, settings=settings, model_options=options)
            hist = pd.read_csv(out / "epochs.tsv", sep="\t")
            rows.append({"variant": a.tag, "model": model, "fold": fold,
                         "honest_final": s["metrics"]["heldout_cindex"],
                         "optimistic_best_epoch": hist["heldout_cindex"].max(),
                         "best_epoch": int(hist["heldout_cindex"].idxmax()) + 1,
                         "seconds": time.perf_counter() - t0})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    print(df.to_string(index=False, float_format="%.4f"))
    for model, g in df.groupby("model", sort=False):
        h, o = g["honest_final"], g["optimistic_best_epoch"]
        print(f"RESULT {a.cohort} {a.tag} {model}: honest {h.mean():.4f} +- {h.std(ddof=1):.4f} "
              f"[{', '.join(f'{v:.3f}' for v in h)}]   "
              f"optimistic (best epoch on the reported fold) {o.mean():.4f} +- {o.std(ddof=1):.4f}   "
              f"{g['seconds'].sum():.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
