#!/usr/bin/env bash
# What the GPU check carries to a bare GPU machine that cannot reach PyPI (Python 3.12,
# CUDA torch, h5py, OpenCV, pandas, scikit-learn, tifffile preinstalled): the wheels of the
# packages it lacks, for CPython $PYVER manylinux x86_64, and the real slide whose tissue
# patches the correctness checks use. Run once here, from the repository root:
#   bash scripts/prepare_gpu_wheels.sh               # -> .gpu/wheels, .gpu/data (ignored by git)
#   PYVER=3.11 bash scripts/prepare_gpu_wheels.sh /tmp/gpu311   # for a rehearsal on 3.11
# Then carry .gpu with the repository (device tool: carry [".gpu"]) and run
#   bash tests/benchmarks/gpu_check.sh
# Keep the versions those of the project's tested environment; about 47 MB in all (the
# device tool carries at most 64 MB with the repository). Without the slide the check's
# correctness stage cannot run: that is an error here, before anything is downloaded.
set -euo pipefail
DEST=${1:-.gpu}
PYVER=${PYVER:-3.12}
PIP=${PIP:-python3 -m pip}
SLIDE=${SLIDE:-${CMTA_SHARED_DATA:-../shared/data}/slides/CMU-1-Small-Region.svs}
if [ ! -f "$SLIDE" ]; then
    echo "error: $SLIDE not found: the GPU check's correctness stage needs it" \
         "(set SLIDE=PATH or CMTA_SHARED_DATA=DIR)" >&2
    exit 1
fi
PACKAGES=(
    openslide-python==1.4.7 openslide-bin==4.0.1.2   # reading slides
    imagecodecs==2026.3.6                            # JPEG tiles of the synthetic slide
    simplejpeg==1.9.0                                # the tiles reader (libjpeg-turbo)
    scikit-survival==0.28.0 scikit-learn==1.9.1      # c-index in training (sksurv pins sklearn 1.9)
    ecos==2.0.14 osqp==1.1.3 numexpr==2.14.2         # scikit-survival's needs the image lacks
)
rm -rf "$DEST/wheels"
mkdir -p "$DEST/wheels" "$DEST/data"
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
$PIP download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST/wheels" "${PACKAGES[@]}"
cp "$SLIDE" "$DEST/data/"
du -sh "$DEST"
ls "$DEST/wheels"
