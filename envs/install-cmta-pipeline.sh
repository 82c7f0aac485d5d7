#!/usr/bin/env bash
# The post-deploy script of every env here (<env>.post-deploy.sh links to it): Snakemake runs
# it once, inside the new env. It installs the cmta_pipeline of the workflow that created the
# env (its source folder, set by workflow/rules/common.smk), editable and without
# dependencies, so that the env keeps the exact pins of its yaml and runs that source.
set -euo pipefail
python -m pip install --no-deps --no-build-isolation --no-index \
    -e "${CMTA_WORKFLOW_SOURCE:?set by workflow/rules/common.smk}"
