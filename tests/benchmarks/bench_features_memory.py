"""Peak memory of `cmta extract` against the number of patches (not a test).

Runs ``cmta extract`` as a separate process on the first N patches of a grid of small
patches over a slide, for each N, and reports the process's peak RSS (``os.wait4``; the
largest of the process and its reader) against the size of the output itself
(N x 1024 float32). To keep 30,000 patches affordable on 2 cores the patches are 64 px at
level 0 and the encoder input is 32 px (``--input-px 32``), eager: that changes the cost
per patch and the (constant) activation memory per batch, not what grows with N: the
features are 1024-d whatever the input size, and the loop, reader and writer are the same.

    PYTHONPATH=$PWD .venv/bin/python tests/benchmarks/bench_features_memory.py \\
        --slide /tmp/feat_bench/large_synthetic_0.25mpp.tif --n 7000 30000 \\
        [--code /work/main]   # measure another checkout's code (e.g. before this change)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[2]


def grid_coords(slide: Path, out: Path, n: int, size: int) -> Path:
    import openslide

    s = openslide.OpenSlide(str(slide))
    w, h = s.dimensions
    s.close()
    per_row = w // size
    i = np.arange(n)
    coords = np.stack([(i % per_row) * size, (i // per_row) * size], 1).astype(np.int64)
    if coords[:, 1].max() + size > h:
        sys.exit(f"{slide} has fewer than {n} patches of {size} px")
    with h5py.File(out, "w") as f:
        d = f.create_dataset("coords", data=coords)
        for k, v in dict(patch_level=0, patch_size=size, patch_size_level0=size,
                         slide_id=slide.stem, level_dim=np.array([w, h])).items():
            d.attrs[k] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", required=True)
    ap.add_argument("--n", type=int, nargs="+", default=[7000, 30000])
    ap.add_argument("--patch-px", type=int, default=64)
    ap.add_argument("--input-px", type=int, default=32)
    ap.add_argument("--code", default=str(REPO), help="checkout whose cmta_pipeline runs")
    ap.add_argument("--workdir", default="/tmp/feat_work/memory")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    slide = Path(a.slide).resolve()
    env = {**os.environ, "PYTHONPATH": a.code}
    rows = []
    for n in a.n:
        coords = grid_coords(slide, work / f"n{n}.coords.h5", n, a.patch_px)
        out = work / f"out{n}"
        cmd = [sys.executable, "-m", "cmta_pipeline", "extract", str(slide), str(coords), "-o",
               str(out), "--weights", "random", "--device", "cpu", "--batch-size", "32",
               "--workers", "1", "--threads", str(a.threads), "--input-px", str(a.input_px),
               "--no-progress"]
        if "--compile" in subprocess.run([sys.executable, "-m", "cmta_pipeline", "extract",
                                          "-h"], env=env, capture_output=True,
                                         text=True).stdout:
            cmd += ["--compile", "off", "--no-resume"]
        load = Path("/proc/loadavg").read_text().split()[:3]
        t = time.perf_counter()
        with open(work / f"n{n}.log", "w") as log:
            p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"extract failed; see {work / f'n{n}.log'}")
        row = {"n": n, "code": a.code, "seconds": round(time.perf_counter() - t, 1),
               "peak_rss_mb": round(usage.ru_maxrss / 1024),
               "output_mb": round(n * 1024 * 4 / 2**20), "load_before": load}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(rows) > 1:
        d_rss = rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]
        d_out = rows[-1]["output_mb"] - rows[0]["output_mb"]
        print(f"peak RSS grew {d_rss} MB from {rows[0]['n']} to {rows[-1]['n']} patches; "
              f"the output grew {d_out} MB ({d_rss / d_out:.2f}x the output's growth)")


if __name__ == "__main__":
    main()
