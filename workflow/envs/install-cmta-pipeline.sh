#!/usr/bin/env bash
# The post-deploy script of every env here, as workflow/rules/common.smk writes it (into
# .snakemake/cmta/<version>-<source>/envs/, beside a copy of the env's yaml) after setting
# CMTA_PACKAGE, CMTA_EDITABLE and CMTA_VERSION: Snakemake runs it once, inside the new env.
# It installs the cmta_pipeline of the workflow that uses the env, without dependencies, so
# that the env keeps the exact pins of its yaml: a checkout editable (the env runs that
# folder), a commit or a tag as a copy of it. Snakemake hashes this script into the env's
# name, so each source of the workflow gets its own envs, even under a shared --conda-prefix.
set -euo pipefail
if [ "$CMTA_EDITABLE" = 1 ]; then
    python -m pip install --no-deps --no-build-isolation --no-index -e "$CMTA_PACKAGE"
else
    python -m pip install --no-deps --no-build-isolation --no-index "$CMTA_PACKAGE"
fi
python -c 'import sys, cmta_pipeline as m
sys.exit(None if m.__version__ == sys.argv[1] else
         f"cmta_pipeline {m.__version__} installed, {sys.argv[1]} expected")' "$CMTA_VERSION"
