#!/usr/bin/env bash
# Set up, make the demo slides, and run the whole pipeline on them (10-15 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/cmta demo-slides ../shared/data/tcga/tcga_blca_all_clean.csv.gz -o resources/demo/slides -n 30
.venv/bin/snakemake --cores "${CORES:-2}" --configfile config/demo/config.yaml
echo "report: results/demo/report/report.html"
