"""The reading side of `cmta extract` alone, one reader: where a patch's time goes.

Not a test. For the first N patches of a coords file, in one process (what one reader
process does), times separately: OpenSlide ``read_region`` (tile decoding and assembly),
the RGBA -> RGB conversion and the resize to the encoder input (PIL, as the reader does),
and the whole of ``PatchBatches`` batches (what a reader hands over). The sum of the parts
is one reader's ceiling in patches/s; N readers scale it by at most the cores they get.

    PYTHONPATH=$PWD .venv/bin/python tests/benchmarks/bench_reading.py \\
        --slide /tmp/feat_bench/large_synthetic_0.25mpp.tif \\
        --coords /tmp/feat_bench/out0/large_synthetic_0.25mpp.coords.h5 --n 512
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cmta_pipeline.features.patches import PatchBatches, load_patch_grid, open_slide


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", required=True)
    ap.add_argument("--coords", required=True)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--input-px", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args()
    from PIL import Image

    slide = open_slide(a.slide)
    grid = load_patch_grid(a.coords, slide)
    out = {}
    for read_at in ("coords", "level0"):
        ds = PatchBatches(a.slide, grid, a.input_px, read_at)
        n = min(a.n, len(ds))
        t_read = t_rgb = t_resize = 0.0
        h = ds._open()
        for i in range(n):
            x, y = grid.coords[i]
            t0 = time.perf_counter()
            region = h.read_region((int(x), int(y)), ds.level, (ds.size, ds.size))
            t1 = time.perf_counter()
            rgb = region.convert("RGB")
            t2 = time.perf_counter()
            rgb.resize((a.input_px, a.input_px),
                       Image.BILINEAR if read_at == "level0" else Image.BOX)
            t3 = time.perf_counter()
            t_read += t1 - t0
            t_rgb += t2 - t1
            t_resize += t3 - t2
        t0 = time.perf_counter()
        for s in range(0, n, a.batch_size):
            batch = ds[list(range(s, min(s + a.batch_size, n)))]
        whole = time.perf_counter() - t0
        assert np.asarray(batch["pixels"]).dtype == np.uint8
        row = {"level": ds.level, "read_px": ds.size, "patches": n,
               "read_region_ms": 1e3 * t_read / n, "to_rgb_ms": 1e3 * t_rgb / n,
               "resize_ms": 1e3 * t_resize / n, "batches_ms": 1e3 * whole / n,
               "one_reader_patches_per_s": n / whole}
        out[read_at] = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
        print(read_at, json.dumps(out[read_at]), flush=True)


if __name__ == "__main__":
    main()
