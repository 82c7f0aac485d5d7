#!/usr/bin/env bash
# The self-contained demo: set up .venv, then run the whole pipeline on a synthetic cohort
# that the workflow generates itself (config/demo/config.yaml; nothing outside the
# repository is read). 3 folds of 5 epochs: 4 min 47 s on 2 quiet cores, setup included,
# 459 s of CPU (docs/benchmarks.md#demo);
# a second run finds .venv and the results in place and returns at once.
#   bash scripts/demo.sh            # CORES=8 bash scripts/demo.sh on a bigger machine
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# --max-jobs-per-timespan: Snakemake's job rate limit (default 100/1s) re-runs its job
# selection on a 1 s timer that every scheduling round starts again, so the timers pile up
# with the jobs done (7,961 rounds in a profiled demo run of 267 jobs, each stat()ing every
# ready job's inputs: more CPU than tiling and encoding together). The same rate, 100 jobs
# per second, counted over 5 s: 5 times fewer timer rounds; the run may end up to 5 s after its
# last job (the last timer). docs/benchmarks.md#demo.
# --report-after-run: the Snakemake report (every result file and figure of the run on one
# HTML page) written by the same process, without planning the workflow a second time.
.venv/bin/snakemake --cores "${CORES:-2}" --configfile config/demo/config.yaml \
    --max-jobs-per-timespan 500/5s \
    --report results/demo/report/snakemake_report.html --report-after-run
echo
echo "held-out c-index beside the planted risk (results/demo/report/planted_risk.tsv):"
cut -f1-3 results/demo/report/planted_risk.tsv
echo "reports: results/demo/report/report.html, results/demo/report/snakemake_report.html"
