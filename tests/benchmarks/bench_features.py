"""Patch-feature throughput, end to end, against a CLAM-style reference loop; precision check.

Usage (repository root):
    python tests/benchmarks/bench_features.py [--device cpu|cuda] [--workers 1]
        [--batch-size 32] [--threads 2] [--synthetic 8192x8192] [--n-synthetic 128]
        [--n-real 88] [--json out.json]

One run measures, side by side and with the same random ResNet-50 trunc weights, batch
size and reader processes:
  * ours: ``cmta_pipeline.features.extract_slide`` (what ``cmta extract`` runs): batch reads
    in worker processes, uint8 transfer, BatchNorm folded, channels_last, chosen precision,
    outputs written;
  * reference: a loop written like CLAM's ``extract_features_fp.py``: a Dataset that opens
    the coords h5 per item, ``read_region(...).convert("RGB")``, torchvision Resize /
    ToTensor / Normalize per item, default collation, fp32 NCHW model, features appended
    to an h5 file batch by batch;
on a real slide (CMU-1-Small-Region.svs, a full grid of 257 px = 128 um patches) and on a
synthetic pyramidal JPEG TIFF at 0.25 um/px (TCGA-like levels 1, 4, 16; 512 px patches read
at level 0 and resized to 224, as CLAM does on 40x slides). Also: reading alone (our
loader, no model), the model alone (ceiling), and the per-patch cosine similarity of the
reduced precisions against fp32 on the real slide's patches (BatchNorm-calibrated random
weights: no ImageNet weights can be downloaded here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from cmta_pipeline.features import ExtractOptions, ResNet50Trunc, build_encoder, extract_slide  # noqa: E402
from cmta_pipeline.features.encoder import IMAGENET_MEAN, IMAGENET_STD, calibrate_batchnorm  # noqa: E402
from cmta_pipeline.features.patches import PatchBatches, load_patch_grid, open_slide  # noqa: E402
from cmta_pipeline.features.runner import EncoderRunner  # noqa: E402

REAL = Path(os.environ.get("CMTA_SHARED_DATA", REPO.parent / "shared" / "data")) / "slides" \
    / "CMU-1-Small-Region.svs"


# ------------------------------------------------------------------ inputs


def write_grid(slide_path, out, size0, n=None, input_px=224):
    from _feature_helpers import write_grid_coords

    return write_grid_coords(slide_path, out, n=n, size0=size0, input_px=input_px)


def make_synthetic_slide(path, width, height, mpp=0.25, tile=256, downsamples=(1, 4, 16)):
    """A pyramidal tiled JPEG TIFF with an H&E-like texture, written fast: the texture's
    tiles are JPEG-encoded once per level and repeated (decoding cost is what matters)."""
    import cv2
    import imagecodecs
    import tifffile

    n = 4096
    rng = np.random.default_rng(0)
    img = np.empty((n, n, 3), np.float32)
    img[:] = (230, 180, 210)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (n, n)).astype(np.float32), (0, 0), 6)
    noise /= noise.std()
    img += noise[..., None] * np.array([15, 30, 20], np.float32)
    nuc = cv2.GaussianBlur(rng.normal(0, 1, (n, n)).astype(np.float32), (0, 0), 2.5)
    img[nuc > np.quantile(nuc, 0.9)] = (120, 60, 150)
    img[noise > 1.6] = (245, 245, 245)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    tex = np.clip(img, 0, 255).astype(np.uint8)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for ds in downsamples:
            w, h = width // ds, height // ds
            small = tex if ds == 1 else cv2.resize(tex, (n // ds, n // ds),
                                                   interpolation=cv2.INTER_AREA)
            m = small.shape[0] // tile
            enc = [[imagecodecs.jpeg_encode(small[r * tile:(r + 1) * tile,
                                                  c * tile:(c + 1) * tile], level=85)
                    for c in range(m)] for r in range(m)]
            nx, ny = -(-w // tile), -(-h // tile)
            tiles = (enc[r % m][c % m] for r in range(ny) for c in range(nx))
            tw.write(tiles, shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile),
                     compression="jpeg", photometric="rgb", subfiletype=0 if ds == 1 else 1,
                     resolution=(1e4 / (mpp * ds), 1e4 / (mpp * ds)),
                     resolutionunit="CENTIMETER")
    return Path(path)


# ------------------------------------------------------------------ CLAM-style reference


class ClamStyleBag(torch.utils.data.Dataset):
    """Like CLAM's Whole_Slide_Bag_FP: one patch per item, the coords h5 opened per item."""

    def __init__(self, file_path, wsi, transforms):
        import h5py

        self.file_path, self.wsi, self.roi_transforms = file_path, wsi, transforms
        with h5py.File(file_path, "r") as f:
            d = f["coords"]
            self.patch_level = int(d.attrs["patch_level"])
            self.patch_size = int(d.attrs["patch_size"])
            self.length = len(d)

    def __len__(self):
        return self.length

    def __getitem__(self, idx):
        import h5py

        with h5py.File(self.file_path, "r") as f:
            coord = f["coords"][idx]
        img = self.wsi.read_region(tuple(int(c) for c in coord), self.patch_level,
                                   (self.patch_size, self.patch_size)).convert("RGB")
        return {"img": self.roi_transforms(img), "coord": coord}


def clam_reference(slide_path, coords_path, model, out_h5, batch_size, workers, device,
                   input_px=224):
    import h5py
    import openslide
    from torchvision import transforms

    wsi = openslide.open_slide(str(slide_path))
    tf = transforms.Compose([transforms.Resize(input_px), transforms.ToTensor(),
                             transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ds = ClamStyleBag(coords_path, wsi, tf)
    kw = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, **kw)
    model = model.to(device).eval()
    n = 0
    mode = "w"
    for batch in loader:
        with torch.inference_mode():
            feats = model(batch["img"].to(device, non_blocking=True)).cpu().numpy()
        coords = batch["coord"].numpy().astype(np.int64)
        with h5py.File(out_h5, mode) as f:  # CLAM's save_hdf5: append batch by batch
            for key, val in (("features", feats), ("coords", coords)):
                if key not in f:
                    f.create_dataset(key, data=val, maxshape=(None,) + val.shape[1:],
                                     chunks=(1,) + val.shape[1:])
                else:
                    d = f[key]
                    d.resize(len(d) + len(val), axis=0)
                    d[-len(val):] = val
        mode = "a"
        n += len(feats)
    return n


# ------------------------------------------------------------------ measurements


def read_only(slide_path, coords_path, batch_size, workers, input_px=224):
    grid = load_patch_grid(coords_path, open_slide(slide_path))
    ds = PatchBatches(slide_path, grid, input_px)
    batches = [list(range(i, min(i + batch_size, len(ds)))) for i in range(0, len(ds), batch_size)]
    loader = torch.utils.data.DataLoader(ds, batch_size=None, sampler=batches,
                                         num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    t = time.perf_counter()
    n = sum(len(b["index"]) for b in loader)
    return n / (time.perf_counter() - t)


def model_only(model, device, precision, batch_size, n_batches, plain=False, input_px=224):
    """Patches/s of the model alone on uint8 batches already in memory."""
    x8 = torch.randint(0, 256, (batch_size, input_px, input_px, 3), dtype=torch.uint8)
    if plain:  # CLAM: fp32 NCHW, unfolded
        m = model.to(device).eval()
        x = (x8.permute(0, 3, 1, 2).float() / 255).contiguous().to(device)

        def step():
            with torch.inference_mode():
                return m(x).cpu()
    else:
        runner = EncoderRunner(model, device, precision)
        if device.type == "cuda":
            x8 = x8.pin_memory()

        def step():
            return runner(x8).cpu()
    step()  # warm-up (oneDNN / cuDNN plans)
    t = time.perf_counter()
    for _ in range(n_batches):
        step()
    return n_batches * batch_size / (time.perf_counter() - t)


def cosine_check(slide_path, coords_path, device, precisions, n=None):
    """Min / mean per-patch cosine of each reduced precision vs fp32 on real patches."""
    grid = load_patch_grid(coords_path, open_slide(slide_path))
    ds = PatchBatches(slide_path, grid, 224)
    idx = list(range(len(ds) if n is None else min(n, len(ds))))
    pixels = torch.from_numpy(ds[idx]["pixels"])
    model = ResNet50Trunc()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    calibrate_batchnorm(model, (pixels.permute(0, 3, 1, 2).float() / 255 - mean) / std)
    ref = torch.cat([EncoderRunner(model, device, "fp32")(pixels[i:i + 32]).cpu()
                     for i in range(0, len(idx), 32)])
    out = {}
    for p in precisions:
        run = EncoderRunner(model, device, p)
        got = torch.cat([run(pixels[i:i + 32]).cpu() for i in range(0, len(idx), 32)])
        cos = torch.nn.functional.cosine_similarity(got.double(), ref.double(), dim=1)
        out[p] = {"n": len(idx), "min": float(cos.min()), "mean": float(cos.mean())}
    return out


def bench_slide(name, slide, coords, model, info, a, device, tmp):
    res = {"slide": name}
    with __import__("h5py").File(coords) as f:
        res["n_patches"] = len(f["coords"])
        res["read_px"] = int(f["coords"].attrs["patch_size"])
    opts = ExtractOptions(weights="random", device=a.device, batch_size=a.batch_size,
                          workers=a.workers, precision=a.precision, threads=a.threads,
                          progress=False)
    t = time.perf_counter()
    r = extract_slide(slide, coords, tmp / f"ours_{name}", opts, model=model, info=info)
    res["ours_s"] = time.perf_counter() - t
    res["ours_pps"] = res["n_patches"] / res["ours_s"]
    res["ours_read_wait_s"] = r.read_wait_s
    res["ours_precision"] = r.precision
    if not a.skip_reference:
        t = time.perf_counter()
        clam_reference(slide, coords, ResNet50Trunc().eval() if model is None else model,
                       tmp / f"ref_{name}.h5", a.batch_size, a.workers, device)
        res["ref_s"] = time.perf_counter() - t
        res["ref_pps"] = res["n_patches"] / res["ref_s"]
        res["speedup"] = res["ours_pps"] / res["ref_pps"]
    res["read_only_pps"] = read_only(slide, coords, a.batch_size, a.workers)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--synthetic", default="8192x8192", help="WxH of the synthetic slide")
    ap.add_argument("--n-synthetic", type=int, default=128, help="patches read from it (0 = all)")
    ap.add_argument("--n-real", type=int, default=0, help="patches of the real slide (0 = all)")
    ap.add_argument("--model-batches", type=int, default=3)
    ap.add_argument("--cosine-patches", type=int, default=31)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--skip-cosine", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    device = torch.device(a.device)
    threads = a.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    a.threads = threads
    model, info = build_encoder("random")
    from cmta_pipeline.features.settings import resolve_precision

    precision = resolve_precision(a.precision, device)
    report = {"device": a.device, "gpu": torch.cuda.get_device_name() if device.type == "cuda"
              else None, "cpu": platform.processor() or platform.machine(),
              "cores": len(os.sched_getaffinity(0)), "threads": threads,
              "batch_size": a.batch_size, "workers": a.workers, "precision": precision,
              "torch": torch.__version__, "slides": []}
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmpd:
        tmp = Path(tmpd)
        t = time.perf_counter()
        w, h = (int(v) for v in a.synthetic.lower().split("x"))
        syn = make_synthetic_slide(tmp / "synthetic.tiff", w, h)
        report["synthetic_write_s"] = time.perf_counter() - t
        inputs = []
        if REAL.is_file():
            inputs.append(("CMU-1-Small-Region (real, 257 px @ level 0)", REAL,
                           write_grid(REAL, tmp / "real.coords.h5", 257, n=a.n_real or None)))
        inputs.append((f"synthetic {w}x{h} @ 0.25 mpp (512 px @ level 0)", syn,
                       write_grid(syn, tmp / "syn.coords.h5", 512, n=a.n_synthetic or None)))
        # warm-up outside the timings: oneDNN / cuDNN build their kernels on first use
        model_only(model, device, precision, a.batch_size, 1)
        model_only(ResNet50Trunc().eval(), device, "fp32", a.batch_size, 1, plain=True)
        for name, slide, coords in inputs:
            res = bench_slide(name.split(" ")[0], slide, coords, model, info, a, device, tmp)
            res["slide"] = name
            report["slides"].append(res)
            print(json.dumps(res), flush=True)
        report["model_only_pps"] = {
            "ours": model_only(model, device, precision, a.batch_size, a.model_batches),
            "clam_fp32_nchw": model_only(ResNet50Trunc().eval(), device, "fp32",
                                         a.batch_size, a.model_batches, plain=True),
        }
        print(json.dumps(report["model_only_pps"]), flush=True)
        if not a.skip_cosine:
            import subprocess

            precs = ["bf16"] if device.type == "cpu" else ["fp16", "bf16"]
            if REAL.is_file():  # the real slide's tissue patches, as `cmta tile` finds them
                tiles = tmp / "tiles"
                subprocess.run([sys.executable, "-m", "cmta_pipeline", "tile", str(REAL), "-o",
                                str(tiles), "--preset", "biopsy"], cwd=REPO, check=True,
                               capture_output=True)
                where = (REAL, tiles / "CMU-1-Small-Region.coords.h5", "real CMU-1-Small-Region")
            else:  # no ../shared here: the synthetic slide's patches
                where = (syn, inputs[-1][2], "synthetic")
            report["cosine_vs_fp32"] = cosine_check(where[0], where[1], device, precs,
                                                    n=a.cosine_patches or None)
            report["cosine_on"] = where[2]
            if device.type == "cpu":
                report["model_only_pps"]["ours_bf16"] = model_only(model, device, "bf16", 8, 1)
            print(json.dumps(report["cosine_vs_fp32"]), flush=True)
    ceiling = report["model_only_pps"]["ours"]
    print("\n| slide | patches | ours (patches/s) | CLAM-style (patches/s) | ratio | "
          "ours / model-only ceiling | reading alone (patches/s) |")
    print("|---|---|---|---|---|---|---|")
    for r in report["slides"]:
        print(f"| {r['slide']} | {r['n_patches']} | {r['ours_pps']:.1f} | "
              f"{r.get('ref_pps', float('nan')):.1f} | {r.get('speedup', float('nan')):.2f}x | "
              f"{r['ours_pps'] / ceiling:.0%} | {r['read_only_pps']:.1f} |")
    for r in report["slides"]:
        # what bounds the end-to-end rate: whichever of reading / model it is close to
        bound = min((r["read_only_pps"], "reading (OpenSlide read + decode + resize)"),
                    (ceiling, "the model"))
        r["bound"] = bound[1]
        print(f"{r['slide']}: end to end {r['ours_pps']:.0f} patches/s = "
              f"{r['ours_pps'] / bound[0]:.0%} of the slower of reading alone "
              f"({r['read_only_pps']:.0f}) and the model alone ({ceiling:.0f}): bound by {bound[1]}")
    print(f"\nmodel only ({precision}, channels_last, BN folded): {ceiling:.1f} patches/s; "
          f"CLAM's fp32 NCHW: {report['model_only_pps']['clam_fp32_nchw']:.1f}")
    if "cosine_vs_fp32" in report:
        for p, c in report["cosine_vs_fp32"].items():
            print(f"{p} vs fp32 on {c['n']} {report['cosine_on']} patches: min cosine "
                  f"{c['min']:.6f}, "
                  f"mean {c['mean']:.6f}")
    if "ours_bf16" in report["model_only_pps"]:
        print(f"model only, bf16 on this CPU: {report['model_only_pps']['ours_bf16']:.1f} patches/s")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
