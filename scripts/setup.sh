#!/usr/bin/env bash
# Create .venv with the pipeline, Snakemake (+ SLURM executor plugin) and the test tools.
#   bash scripts/setup.sh            # from the repository root or anywhere
# TORCH_SPEC selects the torch build installed first (default: the releases this project is
# tested with; set TORCH_SPEC="" to let pip choose, or e.g. a CUDA-specific pin).
# CMTA_EXTRAS picks the optional dependencies (default test: the workflow's, the test tools
# and imagecodecs, which the demo's slides need; workflow: Snakemake and the SLURM plugin).
# A second run with the same pyproject.toml, this script, TORCH_SPEC and extras returns at
# once (.venv/.cmta-setup records them); delete that file to install again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC-"torch==2.14.1 torchvision==0.29.1"}
EXTRAS=${CMTA_EXTRAS:-test}
STAMP=.venv/.cmta-setup

# what this setup installs: the files that decide it, the torch pins and the extras
key="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) torch=[$TORCH_SPEC]"
if [ -x .venv/bin/python ] && [ -f "$STAMP" ] && .venv/bin/python -c "import cmta_pipeline" 2>/dev/null; then
    # the test extras hold the workflow's (snakemake and the SLURM plugin)
    for have in "$EXTRAS" $([ "$EXTRAS" = workflow ] && echo test); do
        if [ "$(cat "$STAMP")" = "$key extras=$have" ]; then
            echo "setup: .venv is up to date ($STAMP: $have)"
            exit 0
        fi
    done
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
rm -f "$STAMP"
# --no-compile: Python compiles a module the first time it is imported; compiling every
# file of torch at install time took about 20 s of CPU that nothing here uses.
if [ -n "$TORCH_SPEC" ]; then
    # shellcheck disable=SC2086
    .venv/bin/python -m pip install -q --no-compile $TORCH_SPEC
fi
.venv/bin/python -m pip install -q --no-compile -e ".[$EXTRAS]"
.venv/bin/cmta --version
echo "$key extras=$EXTRAS" > "$STAMP"
