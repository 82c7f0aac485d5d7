"""Benchmark of the slide stage on a large synthetic slide (not a test).

Writes an 81,920 x 61,440 px pyramidal JPEG TIFF at 0.25 um/px (20.5 x 15.4 mm, levels
1/4/16/64, about 38% tissue, the size of the slide CLAM was timed on in
../shared/docs/reference-facts.md), then runs `cmta tile` on it as a separate process,
several times, and reports wall time and peak RSS of that process.

    .venv/bin/python tests/benchmarks/bench_tiling.py [--workdir /tmp/bench_tiling] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from cmta_pipeline.slides.synthetic import Shape, write_synthetic_slide

WIDTH_UM, HEIGHT_UM, MPP = 81_920 * 0.25, 61_440 * 0.25, 0.25


def specimen() -> list[Shape]:
    """Three resection-sized pieces with holes: about 38% of the slide area."""
    return [
        Shape("ellipse", 1_500, 1_500, 9_000, 12_000),
        Shape("ellipse", 11_000, 2_000, 8_000, 6_000),
        Shape("ellipse", 11_500, 8_800, 7_000, 5_500),
        Shape("ellipse", 4_000, 5_000, 1_200, 1_500, hole=True),
        Shape("ellipse", 14_000, 4_000, 900, 700, hole=True),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/bench_tiling")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    slide = work / "large_synthetic_0.25mpp.tif"
    if not slide.exists():
        t0 = time.perf_counter()
        w, h = write_synthetic_slide(slide, specimen(), WIDTH_UM, HEIGHT_UM, MPP, mask_mpp=4.0)
        print(f"wrote {slide} ({w} x {h} px, {slide.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s")
    times = []
    for i in range(args.repeats):
        out = work / f"out{i}"
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "cmta_pipeline", "tile", str(slide), "-o", str(out), "--status", str(out / "s.json")],
            capture_output=True, text=True,
        )
        times.append(time.perf_counter() - t0)
        if r.returncode:
            sys.exit(r.stderr)
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    status = json.loads((work / "out0" / "s.json").read_text())
    print(json.dumps({
        "slide_px": [81_920, 61_440],
        "n_patches": status["n_patches"],
        "read_level": status["read_level"],
        "in_process_seconds": round(status["seconds"], 3),
        "whole_process_seconds": [round(t, 2) for t in times],
        "best_whole_process_seconds": round(min(times), 2),
        "peak_rss_mb": round(rss_mb),
    }, indent=2))


if __name__ == "__main__":
    main()
