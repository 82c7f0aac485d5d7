#!/usr/bin/env bash
# Create .venv with the pipeline, Snakemake (+ SLURM executor plugin) and the test tools.
#   bash scripts/setup.sh            # from the repository root or anywhere
# TORCH_SPEC selects the torch build installed first (default: the releases this project is
# tested with; set TORCH_SPEC="" to let pip choose, or e.g. a CUDA-specific pin).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC-"torch==2.14.1 torchvision==0.29.1"}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ -n "$TORCH_SPEC" ]; then
    # shellcheck disable=SC2086
    .venv/bin/python -m pip install -q $TORCH_SPEC
fi
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/cmta --version
