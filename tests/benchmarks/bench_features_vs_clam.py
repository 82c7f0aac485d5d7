"""`cmta extract` against CLAM's own extract_features_fp.py, whole processes, side by side.

Not a test. Both run as separate processes on the same coords (the first N patches of the
slide stage's coords file), same batch size, same torch threads, random ResNet-50 trunc
weights on both sides (no ImageNet download here: CLAM's checkout must have its weight
loading switched to ``pretrained=False`` in models/timm_wrapper.py; that is the only change).
For each N, runs are interleaved: ours with an empty compile cache (cold, first N only), ours
eager (``--compile off``, first N only), ours with the cache the cold run filled (warm: what
every job but the first of a cohort sees), CLAM; on request (``--kinds ... ours_bf16``) ours
compiled in bf16 (``--precision bf16``: not the same arithmetic, so a separate row).
Wall time includes start-up, compilation and writing; peak RSS is the process's own
(``os.wait4``). Also measured in this process: the encoder alone, eager and compiled, on
uint8 batches in memory (the ceiling of the end-to-end rate).

    PYTHONPATH=$PWD .venv/bin/python tests/benchmarks/bench_features_vs_clam.py \\
        --slide /tmp/feat_bench/large_synthetic_0.25mpp.tif \\
        --coords /tmp/feat_bench/out0/large_synthetic_0.25mpp.coords.h5 \\
        --clam /tmp/feat_work/clam --clam-pythonpath /tmp/feat_work/clam_site \\
        --n 1024 4096 --repeats 2 1 --json /tmp/feat_work/vs_clam.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py

REPO = Path(__file__).resolve().parents[2]


def subset_coords(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` patches of ``src`` with all its attributes (CLAM reads dataset attrs)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        d = g.create_dataset("coords", data=f["coords"][:n])
        for k, v in f["coords"].attrs.items():
            d.attrs[k] = v
        for k, v in f.attrs.items():
            g.attrs[k] = v
    return dst


def timed(jobs: list[tuple[list, str, dict, Path]]) -> list[tuple[float, float]]:
    """Wall seconds and peak RSS (MB) of each process (cmd, cwd, env, log), all started
    together (one job: sequential timing), each timed to its own end."""
    t, procs = time.perf_counter(), {}
    for i, (cmd, cwd, env, log) in enumerate(jobs):
        with open(log, "w") as out:
            p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        procs[p.pid] = i
    res = [None] * len(jobs)
    while procs:
        pid, status, usage = os.wait4(-1, 0)
        if pid not in procs:
            continue
        i = procs.pop(pid)
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"{jobs[i][0][:4]} failed; see {jobs[i][3]}")
        res[i] = (time.perf_counter() - t, usage.ru_maxrss / 1024)
    return res


def uptime() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def model_only(threads: int, batch_size: int, n_batches: int, cache: Path) -> dict:
    """Patches/s of the encoder alone (eager and compiled, warm) on uint8 batches in memory."""
    import torch

    sys.path.insert(0, str(REPO))
    from cmta_pipeline.features import build_encoder
    from cmta_pipeline.features.runner import EncoderRunner
    from cmta_pipeline.features.settings import use_compile_cache

    use_compile_cache(cache)
    torch.set_num_threads(threads)
    model, _ = build_encoder("random")
    x = torch.randint(0, 256, (batch_size, 224, 224, 3), dtype=torch.uint8)
    out = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        run = EncoderRunner(model, torch.device("cpu"), "fp32", compiled=compiled,
                            batch_size=batch_size)
        run(x)  # warm-up: compilation (from the cache) / oneDNN plans
        t = time.perf_counter()
        for _ in range(n_batches):
            run(x)
        out[name] = n_batches * batch_size / (time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", required=True)
    ap.add_argument("--coords", required=True, help="cmta tile's coords file of the slide")
    ap.add_argument("--clam", required=True, help="CLAM checkout (weights: pretrained=False)")
    ap.add_argument("--clam-pythonpath", default="", help="where timm is, for CLAM only")
    ap.add_argument("--n", type=int, nargs="+", default=[1024])
    ap.add_argument("--repeats", type=int, nargs="+", default=[2], help="per N")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/feat_work/vs_clam")
    ap.add_argument("--skip-clam", action="store_true")
    ap.add_argument("--kinds", nargs="+", default=["ours_cold", "ours_eager", "ours_warm", "clam"])
    ap.add_argument("--cache", default=None, help="an inductor cache that already holds the "
                    "encoder (then no cold run is needed); default: filled by ours_cold")
    ap.add_argument("--concurrent", action="store_true",
                    help="start a repeat's runs together (same load for all; the ones that "
                    "end last get the machine to themselves at the end)")
    ap.add_argument("--model-batches", type=int, default=8)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    slide = Path(a.slide).resolve()
    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sid = slide.stem
    threads_env = {"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    ours_env = {**os.environ, **threads_env, "PYTHONPATH": str(REPO)}
    ours_env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    clam_env = {**os.environ, **threads_env, "PYTHONPATH": a.clam_pythonpath}
    report = {"slide": str(slide), "batch_size": a.batch_size, "threads": a.threads,
              "cores": len(os.sched_getaffinity(0)), "runs": []}
    for n, repeats in zip(a.n, a.repeats + [a.repeats[-1]] * len(a.n)):
        d = work / f"n{n}"
        coords = subset_coords(Path(a.coords), d / "patches" / f"{sid}.h5", n)
        (d / "slides.csv").write_text(f"slide_id\n{slide.name}\n")
        for rep in range(repeats):
            runs = []
            # filled by the cold run, reused by the warm ones
            cache = Path(a.cache) if a.cache else d / "cache0"
            first = rep == 0 and n == a.n[0]
            jobs = []
            for kind in a.kinds:
                if kind == "clam" and a.skip_clam:
                    continue
                if kind in ("ours_cold", "ours_eager") and not first:
                    continue  # once, at the first N: what compiling costs and gains
                if kind == "clam":
                    cmd = [sys.executable, "extract_features_fp.py", "--data_h5_dir", str(d),
                           "--data_slide_dir", str(slide.parent), "--slide_ext",
                           slide.suffix, "--csv_path", str(d / "slides.csv"), "--feat_dir",
                           str(d / f"clam{rep}"), "--batch_size", str(a.batch_size),
                           "--no_auto_skip"]
                    cwd, env = a.clam, clam_env
                else:
                    cmd = [sys.executable, "-m", "cmta_pipeline", "extract", str(slide),
                           str(coords), "-o", str(d / f"{kind}{rep}"), "--weights", "random",
                           "--device", "cpu", "--batch-size", str(a.batch_size),
                           "--threads", str(a.threads), "--no-progress",
                           "--compile-cache", str(cache)]
                    if kind == "ours_eager":
                        cmd += ["--compile", "off"]
                    if kind == "ours_bf16":  # reduced precision: not equal arithmetic
                        cmd += ["--precision", "bf16"]
                    cwd, env = REPO, ours_env
                jobs.append((kind, (cmd, cwd, env, d / f"{kind}{rep}.log")))
            groups = [jobs] if a.concurrent else [[j] for j in jobs]
            for group in groups:
                load = uptime()
                for (kind, _), (s, rss) in zip(group, timed([j for _, j in group])):
                    row = {"n": n, "rep": rep, "kind": kind, "seconds": round(s, 2),
                           "patches_per_s": round(n / s, 2), "peak_rss_mb": round(rss),
                           "load_before": load, "concurrent": len(group) > 1}
                    runs.append(row)
                    print(json.dumps(row), flush=True)
            report["runs"] += runs
    report["model_only_pps"] = model_only(a.threads, a.batch_size, a.model_batches,
                                          Path(a.cache) if a.cache else
                                          work / f"n{a.n[0]}" / "cache0")
    report["load_after"] = uptime()
    print(json.dumps(report["model_only_pps"]), flush=True)

    def med(n, kind):
        v = sorted(r["seconds"] for r in report["runs"] if r["n"] == n and r["kind"] == kind)
        return v[len(v) // 2] if v else float("nan")

    print("\n| patches | ours, eager (s) | ours, compiled, cold cache (s) | ours, compiled, "
          "warm cache (s) | CLAM (s) | CLAM / ours warm | CLAM / ours cold |")
    print("|---|---|---|---|---|---|---|")
    for n in a.n:
        e, c, w, k = (med(n, x) for x in ("ours_eager", "ours_cold", "ours_warm", "clam"))
        print(f"| {n} | {e:.1f} | {c:.1f} | {w:.1f} | {k:.1f} | {k / w:.2f}x | {k / c:.2f}x |")
    if len(a.n) > 1:  # the marginal rate: start-up and compilation cancel out
        n0, n1 = a.n[0], a.n[-1]
        steady = (n1 - n0) / (med(n1, "ours_warm") - med(n0, "ours_warm"))
        report["steady_pps"] = steady
        print(f"steady state (ours, warm, {n0} -> {n1} patches): {steady:.1f} patches/s = "
              f"{steady / report['model_only_pps']['compiled']:.0%} of the compiled encoder "
              f"alone ({report['model_only_pps']['compiled']:.1f}; eager "
              f"{report['model_only_pps']['eager']:.1f})")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
