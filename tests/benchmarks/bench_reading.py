"""The reading side of `cmta extract`, one reader per path, side by side (not a test).

For the same patches of a coords file, in one process (what one reader process does),
each reader of ``features.reader`` hands over items of 32 patches as it does in an
extraction on a GPU node; the paths are interleaved item by item (the order rotated each
item), over several rounds, each round with fresh readers (cold tile caches, as for a new
slide). Reported per path: patches/s of one reader (the median over rounds, and the best).

* ``openslide``: OpenSlide ``read_region`` + RGBA -> RGB + PIL resize (today's reader).
* ``tiles``: the JPEG tiles decoded by libjpeg-turbo; the patch handed over as read, its
  resize done on the encoder's device (GPU; same bytes as PIL). Also given:
  ``resize_in_reader_patches_per_s`` (the same reader resizing with PIL, as on a CPU-only
  run) and ``device_resize_ms_per_patch_on_this_cpu`` (the device resize run on this CPU;
  on a GPU it is a fraction of that).
* ``tiles-half`` (a departure): tiles decoded at half size, resized in the reader.
* ``nvjpeg`` (a departure): the reader fetches the compressed tiles only; the GPU decodes
  (not timed here; ``decode_on_this_cpu_patches_per_s`` is torchvision's CPU decoder).

The last line printed is one JSON object: a key per path with its ``patches_per_s`` (one
reader), and ``default_path`` (what ``features.reader: auto`` uses on such a slide).

    PYTHONPATH=$PWD .venv/bin/python tests/benchmarks/bench_reading.py --json \\
        --synthetic /tmp/bench_reading          # writes (once) and tiles the 81,920 x 61,440 slide
    ... --slide SLIDE --coords COORDS_H5 --n 1024 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cmta_pipeline.features.batches import decode_item
from cmta_pipeline.features.patches import PatchBatches, load_patch_grid, open_slide
from cmta_pipeline.features.readers import ReaderChoice, choose_reader, make_dataset
from cmta_pipeline.features.resize import resize_batch

PATHS = ("openslide", "tiles", "tiles-half", "nvjpeg")
DEFAULT_PATH = "tiles"  # features.reader: auto on a covered slide


def synthetic(work: Path) -> tuple[Path, Path]:
    """The 81,920 x 61,440 px JPEG TIFF at 0.25 um/px of bench_tiling.py and its `cmta tile`
    grid (512 px patches read at level 0, resized to 224), written once into ``work``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_tiling import HEIGHT_UM, MPP, WIDTH_UM, specimen

    from cmta_pipeline.slides.synthetic import write_synthetic_slide

    work.mkdir(parents=True, exist_ok=True)
    slide = work / "large_synthetic_0.25mpp.tif"
    if not slide.exists():
        part = slide.with_name(slide.name + ".part")
        write_synthetic_slide(part, specimen(), WIDTH_UM, HEIGHT_UM, MPP, mask_mpp=4.0)
        part.rename(slide)
    coords = work / "tiles" / "large_synthetic_0.25mpp.coords.h5"
    if not coords.exists():
        subprocess.run([sys.executable, "-m", "cmta_pipeline", "tile", str(slide), "-o",
                        str(work / "tiles")], check=True, capture_output=True)
    return slide, coords


def readers(slide, grid, input_px: int) -> dict:
    """path -> (make a fresh reader, hand over one item, the choice made)."""
    level, size = grid.patch_level, grid.patch_size
    out = {}
    for path in PATHS:
        if path == "openslide":
            choice = ReaderChoice("openslide", path, "")
        else:  # nvjpeg's reader side needs no GPU: chosen as for tiles, then its dataset
            choice = choose_reader("tiles" if path == "nvjpeg" else path, slide, level, size,
                                   input_px, cuda=False)
            if choice.name == "openslide":
                print(f"{path}: not available here ({choice.note}); skipped", flush=True)
                continue
            if path == "nvjpeg":
                choice = ReaderChoice("nvjpeg", path, choice.note, choice.layout)

        def make(choice=choice, on_device=path == "tiles"):
            return make_dataset(choice, slide, grid, input_px, "coords", on_device)

        out[path] = (make, choice)
    out["tiles (resize in reader)"] = (
        lambda: make_dataset(out["tiles"][1], slide, grid, input_px, "coords", False),
        out["tiles"][1]) if "tiles" in out else None
    return {k: v for k, v in out.items() if v is not None}


def time_paths(paths: dict, n: int, rounds: int, item: int, warm_index: int) -> dict:
    """Patches/s of one reader per path per round, interleaved item by item."""
    names = list(paths)
    items = [list(range(s, min(s + item, n))) for s in range(0, n, item)]
    rates = {k: [] for k in names}
    for _ in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        handles = {}
        for k in names:
            handles[k] = paths[k][0]()
            handles[k][[warm_index]]  # opens the files, outside the timing
        for b, idx in enumerate(items):
            rot = b % len(names)
            for k in names[rot:] + names[:rot]:
                t = time.perf_counter()
                handles[k][idx]
                spent[k] += time.perf_counter() - t
        for k in names:
            rates[k].append(n / spent[k])
    return rates


def device_side(paths: dict, grid, n: int, input_px: int) -> dict:
    """What the device does for ``tiles`` and ``nvjpeg``, timed on this CPU (one thread)."""
    out = {}
    torch.set_num_threads(1)
    if "tiles" in paths:
        ds = paths["tiles"][0]()
        px = torch.from_numpy(ds[list(range(min(n, 64)))]["pixels"])
        t = time.perf_counter()
        resize_batch(px, input_px, ds.filter)
        out["device_resize_ms_per_patch_on_this_cpu"] = 1e3 * (time.perf_counter() - t) / len(px)
    if "nvjpeg" in paths:
        ds = paths["nvjpeg"][0]()
        k = min(n, 128)
        items = [ds[list(range(s, min(s + 32, k)))] for s in range(0, k, 32)]
        t = time.perf_counter()
        for it in items:
            decode_item({**it, "streams": torch.from_numpy(it["streams"])}, ds,
                        torch.device("cpu"))
        out["decode_on_this_cpu_patches_per_s"] = k / (time.perf_counter() - t)
    return out


def openslide_parts(slide, grid, n: int, input_px: int) -> dict:
    """Where OpenSlide's time goes: read_region, RGBA -> RGB, resize (ms per patch)."""
    from PIL import Image

    ds = PatchBatches(slide, grid, input_px)
    h = ds._open()
    t_read = t_rgb = t_resize = 0.0
    for x, y in grid.coords[:n]:
        t0 = time.perf_counter()
        region = h.read_region((int(x), int(y)), ds.level, (ds.size, ds.size))
        t1 = time.perf_counter()
        rgb = region.convert("RGB")
        t2 = time.perf_counter()
        rgb.resize((input_px, input_px), Image.BOX)
        t3 = time.perf_counter()
        t_read, t_rgb, t_resize = t_read + t1 - t0, t_rgb + t2 - t1, t_resize + t3 - t2
    return {"read_region_ms": 1e3 * t_read / n, "to_rgb_ms": 1e3 * t_rgb / n,
            "resize_ms": 1e3 * t_resize / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide")
    ap.add_argument("--coords")
    ap.add_argument("--synthetic", metavar="DIR", help="write (once) and tile the synthetic "
                    "81,920 x 61,440 px slide in DIR, and use it")
    ap.add_argument("--n", type=int, default=1024, help="patches per path per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--item", type=int, default=32, help="patches per item")
    ap.add_argument("--input-px", type=int, default=224)
    ap.add_argument("--json", action="store_true", help="print the JSON summary last")
    a = ap.parse_args()
    if a.synthetic:
        slide, coords = synthetic(Path(a.synthetic))
    elif a.slide and a.coords:
        slide, coords = Path(a.slide), Path(a.coords)
    else:
        ap.error("give --slide and --coords, or --synthetic DIR")
    grid = load_patch_grid(coords, open_slide(slide))
    n = min(a.n, len(grid.coords) - 1)
    paths = readers(slide, grid, a.input_px)
    print(f"{slide.name}: {len(grid.coords)} patches of {grid.patch_size} px at level "
          f"{grid.patch_level} -> {a.input_px}; timing {n} x {a.rounds} rounds of "
          f"{', '.join(paths)}; load average {os.getloadavg()[0]:.1f}", flush=True)
    rates = time_paths(paths, n, a.rounds, a.item, len(grid.coords) - 1)
    base = rates["openslide"]
    summary = {}
    for k, v in rates.items():
        ratio = statistics.median(r / b for r, b in zip(v, base))
        print(f"{k:26s} median {statistics.median(v):7.1f}  best {max(v):7.1f} patches/s  "
              f"x{ratio:.2f} openslide (median of per-round ratios)", flush=True)
        row = {"patches_per_s": round(statistics.median(v), 1), "best": round(max(v), 1),
               "rounds": [round(r, 1) for r in v], "x_openslide": round(ratio, 2)}
        if k == "tiles (resize in reader)":
            summary["tiles"]["resize_in_reader_patches_per_s"] = row["patches_per_s"]
            summary["tiles"]["resize_in_reader_x_openslide"] = row["x_openslide"]
        else:
            summary[k] = row
    summary["openslide"].update({k: round(v, 3) for k, v in
                                 openslide_parts(slide, grid, min(n, 128), a.input_px).items()})
    extra = device_side(paths, grid, n, a.input_px)
    for key, v in extra.items():
        summary["tiles" if "resize" in key else "nvjpeg"][key] = round(v, 3)
    summary["default_path"] = DEFAULT_PATH
    print(f"load average at the end {os.getloadavg()[0]:.1f}", flush=True)
    if a.json:
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
