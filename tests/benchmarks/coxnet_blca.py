"""Linear Cox baseline on TCGA-BLCA genomics: the floor the deep models must beat honestly.

Elastic-net Cox (scikit-survival's CoxnetSurvivalAnalysis, l1_ratio 0.5) on the six
families' features (concatenated, 3,391-3,392 inputs, z-scored with each fold's train rows
by `cmta cohort`), over the published 5-fold splits. Two honest protocols, neither looks at
the held-out fold before predicting it:
  defaults: scikit-survival's default penalty path, prediction at its last (smallest)
            penalty: no selection at all;
  inner CV: the penalty with the best mean c-index over an inner 5-fold CV of the
            training rows (30 penalties, alpha_min_ratio 0.05).
For contrast the script also prints the c-index of the penalty picked on the held-out
fold itself (the optimistic protocol of the released code).

Run from the repository root:
    .venv/bin/python tests/benchmarks/coxnet_blca.py [--shared ../shared/data] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sksurv.linear_model import CoxnetSurvivalAnalysis  # noqa: E402
from sksurv.metrics import concordance_index_censored  # noqa: E402
from sksurv.util import Surv  # noqa: E402

from cmta_pipeline import genomics as g  # noqa: E402
from cmta_pipeline.cohort import build_cohort, load_fold, stratified_folds  # noqa: E402


def cindex(event, time_, risk) -> float:
    return concordance_index_censored(np.asarray(event, bool), np.asarray(time_, float), risk)[0]


def coxnet(alphas=None) -> CoxnetSurvivalAnalysis:
    return CoxnetSurvivalAnalysis(
        l1_ratio=0.5, alpha_min_ratio=0.05, n_alphas=30, alphas=alphas, max_iter=100000
    )


def choose_alpha(X, event, time_, seed: int, n_inner: int = 5) -> tuple[float, np.ndarray]:
    """Penalty with the best mean c-index over an inner CV of the training rows."""
    path = coxnet().fit(X, Surv.from_arrays(event.astype(bool), time_)).alphas_
    folds = stratified_folds(event.astype(int), n_inner, seed)
    scores = np.zeros((n_inner, len(path)))
    for k in range(n_inner):
        tr, va = folds != k, folds == k
        m = coxnet(alphas=path).fit(X[tr], Surv.from_arrays(event[tr].astype(bool), time_[tr]))
        for j, a in enumerate(path):
            scores[k, j] = cindex(event[va], time_[va], m.predict(X[va], alpha=a))
    return float(path[int(np.argmax(scores.mean(0)))]), path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    tcga = Path(args.shared) / "tcga"
    work = Path(args.out or tempfile.mkdtemp(prefix="coxnet_blca_"))
    t0 = time.time()
    data = g.load_wide_table(tcga / "tcga_blca_all_clean.csv.gz")
    g.write_genomics(data, g.read_families(tcga / "signatures.csv"), work / "genomics")
    build_cohort(work / "genomics", work / "cohort", splits=tcga / "splits" / "5foldcv" / "tcga_blca")
    t_prep = time.time() - t0

    honest, oracle, default = [], [], []
    print("fold  n_train  n_heldout  defaults c-index | alpha(inner CV)  c-index  | alpha picked on held-out  c-index")
    for k in range(5):
        fd = load_fold(work / "cohort", k)
        p = fd.patients
        X = {s: np.stack([np.concatenate(fd.omics[c]) for c in p.index[p["split"] == s]]).astype(np.float64)
             for s in ("train", "heldout")}
        tr, ho = p[p["split"] == "train"], p[p["split"] == "heldout"]
        ev, tm = tr["event"].to_numpy(), tr["survival_months"].to_numpy()
        plain = CoxnetSurvivalAnalysis(l1_ratio=0.5, max_iter=100000).fit(X["train"], Surv.from_arrays(ev.astype(bool), tm))
        default.append(cindex(ho["event"], ho["survival_months"], plain.predict(X["heldout"])))
        alpha, path = choose_alpha(X["train"], ev, tm, seed=k)
        model = coxnet(alphas=path).fit(X["train"], Surv.from_arrays(ev.astype(bool), tm))
        c = cindex(ho["event"], ho["survival_months"], model.predict(X["heldout"], alpha=alpha))
        per_alpha = [cindex(ho["event"], ho["survival_months"], model.predict(X["heldout"], alpha=a)) for a in path]
        j = int(np.argmax(per_alpha))
        honest.append(c)
        oracle.append(per_alpha[j])
        print(f"{k:4d}  {len(tr):7d}  {len(ho):9d}  {default[-1]:16.4f} | {alpha:15.4f}  {c:7.4f}  | {path[j]:24.4f}  {per_alpha[j]:7.4f}")
    print(f"honest, defaults (no selection): c-index {np.mean(default):.4f} +- {np.std(default):.4f}")
    print(f"honest (penalty from inner CV on train): c-index {np.mean(honest):.4f} +- {np.std(honest):.4f} (mean +- sd over 5 folds)")
    print(f"optimistic (penalty picked on the held-out fold): {np.mean(oracle):.4f} +- {np.std(oracle):.4f}")
    print(f"inputs per patient: {sum(fd.omic_sizes)}; preparation {t_prep:.1f} s; total {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
