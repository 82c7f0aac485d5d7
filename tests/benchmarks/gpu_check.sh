#!/usr/bin/env bash
# GPU check of the feature stage (issue 3), one short script for a machine with one GPU.
# Run from the repository root with the project's venv carried over; installs nothing.
#   bash tests/benchmarks/gpu_check.sh            (results also in $OUT or /tmp)
# It prints: the GPU, `cmta extract --device cuda` on a small synthetic slide (checks the
# CLI path, fp16 and its per-slide cosine check), then the feature benchmark on CUDA: end to
# end patches/s of ours vs a CLAM-style loop (same workers, batch size) on a large synthetic
# 40x slide (40,960 x 40,960 px, 6,400 patches of 512 px read at level 0 -> 224 px), reading
# alone, the model alone, and fp16 / bf16 vs fp32 cosine similarity. Expected runtime: 2-4 min.
set -euo pipefail
PY=${PY:-.venv/bin/python}
RES=${OUT:-/tmp}
DEVICE=${DEVICE:-cuda}            # DEVICE=cpu SYN=1024x1024 SMALL=1024 COS=2 BS=4 MB=1: rehearsal
SYN=${SYN:-40960x40960}
SMALL=${SMALL:-8192}
COS=${COS:-256}
BS=${BS:-256}
MB=${MB:-20}
CORES=$(nproc)
WORKERS=$(( CORES > 2 ? CORES - 2 : 1 ))
echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "cores: $CORES, readers: $WORKERS"
df -h /dev/shm 2>/dev/null | tail -1 || true   # DataLoader batches travel through shared memory
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

echo "== cmta extract --device cuda (CLI path, fp16 + cosine check)"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
$PY - "$TMP" "$SMALL" <<'PYEOF'
import sys
sys.path.insert(0, "tests"); sys.path.insert(0, "tests/benchmarks")
from bench_features import make_synthetic_slide, write_grid
n = int(sys.argv[2])
s = make_synthetic_slide(f"{sys.argv[1]}/small.tiff", n, n)
write_grid(s, f"{sys.argv[1]}/small.coords.h5", 512)
PYEOF
timeout 120 $PY -m cmta_pipeline extract "$TMP/small.tiff" "$TMP/small.coords.h5" -o "$TMP/out" \
    --weights random --device "$DEVICE" --workers "$WORKERS" --batch-size "$BS" 2>&1 | tail -3
$PY -c "
import h5py; f = h5py.File('$TMP/out/small.features.h5')
print('features', f['features'].shape, 'precision', f.attrs['precision'], 'min cosine vs fp32', f.attrs['precision_check_min_cosine'])"

echo "== benchmark (ours vs CLAM-style, $DEVICE)"
timeout 420 $PY tests/benchmarks/bench_features.py --device "$DEVICE" --workers "$WORKERS" \
    --threads 4 --batch-size "$BS" --synthetic "$SYN" --n-synthetic 0 --n-real 0 \
    --model-batches "$MB" --cosine-patches "$COS" --json "$RES/bench_features_gpu.json"
