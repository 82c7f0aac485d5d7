#!/usr/bin/env bash
# GPU check (issues 13, 21), one call on a bare GPU machine: Python 3.12 with a CUDA torch, h5py,
# OpenCV, pandas; no internet; this repository copied over with the folder .gpu carried
# beside it (scripts/prepare_gpu_wheels.sh fills it: wheels of what the image lacks, and the
# real slide of the correctness checks). Run from anywhere:
#   bash tests/benchmarks/gpu_check.sh                     # results: $OUT/gpu_check.json
#   PY=.venv/bin/python bash tests/benchmarks/gpu_check.sh --device cpu --quick  # rehearsal
# Steps: install the carried wheels into a private folder (no network, no dependency
# resolution), then tests/benchmarks/gpu_check.py: import check first (exit 2 with the
# list of what is missing, in seconds), correctness checks, throughput. It stops starting
# new stages after --budget-s (380 s; the compile stage only with 100 s of it left), stops
# any stage after --stage-timeout-s (150 s) so that the next ones still run, and is killed
# at 470 s in any case: the whole call, wheels included, fits one 540 s device call.
# Encoders (issue 22): ENCODERS=resnet50,uni_v1,conch_v1,virchow2,ctranspath (or "all")
# then times those encoders on the GPU (tests/benchmarks/bench_encoders.py: random weights,
# fp32/fp16/bf16, cosine to fp32; batch 64, 3 batches) into $OUT/gpu_encoders.json, within
# ENCODERS_TIMEOUT_S (120 s) more: give the device call that much longer.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
CARRY=${CARRY:-.gpu}
SITE=${SITE:-/tmp/cmta_gpu_site}
RESULTS=${OUT:-/tmp}/gpu_check.json
echo "== machine: $(uname -m), $($PY -V 2>&1), $(nproc --all) CPUs (nproc: $(nproc)), OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
if compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
    t0=$(date +%s)
    # --no-deps: the wheels are exactly what the image lacks; --target: nothing of the
    # image's own packages is touched
    if ! $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$CARRY"/wheels/*.whl; then
        echo "FAILED: installing the carried wheels from $CARRY/wheels"; exit 3
    fi
    echo "installed $(ls "$CARRY"/wheels/*.whl | wc -l) carried wheels into $SITE in $(( $(date +%s) - t0 )) s"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no carried wheels in $CARRY/wheels (scripts/prepare_gpu_wheels.sh makes them)"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DATA=()
[ -d "$CARRY/data" ] && DATA=(--data "$CARRY/data")
timeout -k 5 470 $PY tests/benchmarks/gpu_check.py --json "$RESULTS" "${DATA[@]}" "$@"
rc=$?
[ $rc -eq 124 ] && echo "TIMED OUT after 470 s; the stages that ended are in $RESULTS"
if [ -n "${ENCODERS:-}" ]; then
    [ "$ENCODERS" = all ] && ENCODERS=$($PY -c "from cmta_pipeline.features.encoders import REGISTRY; print(','.join(REGISTRY))")
    timeout -k 5 "${ENCODERS_TIMEOUT_S:-120}" $PY tests/benchmarks/bench_encoders.py --device cuda \
        --batch-size 64 --batches 3 --encoders "$ENCODERS" --json "${OUT:-/tmp}/gpu_encoders.json" \
        || echo "encoder timings ended early (rc $?); those done are printed above"
fi
exit $rc
