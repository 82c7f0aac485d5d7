"""CMTA training step (forward, NLL + L1 alignment, backward, SGD) on CPU: s/step, peak RSS.

One process per measurement, so that the peak RSS (ru_maxrss) belongs to it alone. Each
step is timed in wall-clock and in process CPU time (user + system of all its threads);
on a shared machine the CPU time with ``--threads 1`` is the steadier measure of work:

    python tests/benchmarks/cmta_step.py --patches 4096 [--attention nystrom|exact]
        [--short-exact] [--threads 2] [--steps 3] [--official DIR]

``--official DIR`` times the authors' network instead (DIR: a checkout of
github.com/FT-ZHOU-ZZZ/CMTA, kept outside this repository; needs ``einops`` importable),
with the same step: their ``CMTA(omic_sizes)``, their outputs, the same loss and optimiser.
Side by side, alternating processes (ours, theirs, ours, ...) at each bag size:

    python tests/benchmarks/cmta_step.py --compare 4096,16384,50000 --official DIR [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SIZES = [94, 334, 521, 468, 1496, 479]


def _official_model(directory: str):
    """The authors' CMTA on CPU: their code calls .cuda() unconditionally and builds a
    torch.cuda.FloatTensor in the bilinear fusion; both are made CPU no-ops here."""
    import torch

    sys.path.insert(0, directory)
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.cuda.FloatTensor = lambda *shape: torch.empty(*shape)
    from models.cmta.network import CMTA as Official  # noqa: E402

    model = Official(omic_sizes=SIZES)

    def forward(bag, omics):
        h, s, p, p_hat, g, g_hat = model(x_path=bag, **{f"x_omic{i + 1}": o for i, o in enumerate(omics)})
        return {"hazards": h, "survival": s, "p": p, "p_hat": p_hat, "g": g, "g_hat": g_hat}

    return model, forward


def measure(a) -> None:
    import torch

    from cmta_pipeline.models import build_model
    from cmta_pipeline.training.losses import cmta_loss

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    if a.official:
        model, forward = _official_model(a.official)
    else:
        model = build_model("cmta", SIZES, attention=a.attention, short_exact=a.short_exact)
        forward = model
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-5)
    bag = torch.randn(a.patches, 1024)
    omics = [torch.randn(s) for s in SIZES]
    label, c = torch.tensor([2]), torch.tensor([0.0])
    times, cpu = [], []
    for i in range(a.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        out = forward(bag, omics)
        loss, _ = cmta_loss(out, label, c, alpha=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    times.sort()
    cpu.sort()
    who = "official" if a.official else f"project attention={a.attention} short_exact={a.short_exact}"
    print(f"{who} patches={a.patches} threads={a.threads} steps={a.steps} "
          f"s_per_step_median={times[len(times) // 2]:.3f} min={times[0]:.3f} "
          f"cpu_s_per_step_min={cpu[0]:.3f} peak_rss_gb={rss_gb:.2f}",
          flush=True)


def compare(a) -> None:
    """Alternate processes (ours, theirs) at each size; print every run and the ratios."""
    base = [sys.executable, __file__, "--threads", str(a.threads), "--steps", str(a.steps)]
    rows = []
    for n in [int(x) for x in a.compare.split(",")]:
        for r in range(a.rounds):
            for who in ("project", "official"):
                cmd = base + ["--patches", str(n)] + (["--official", a.official] if who == "official" else [])
                load = os.getloadavg()[0]
                line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
                fields = dict(f.split("=") for f in line.split() if "=" in f)
                rows.append((n, who, float(fields["min"]), float(fields["peak_rss_gb"]), load,
                             float(fields["cpu_s_per_step_min"])))
                print(f"{n:>6} round {r} {who:<8} wall {fields['min']:>7} s  "
                      f"cpu {fields['cpu_s_per_step_min']:>7} s  {fields['peak_rss_gb']} GB  "
                      f"(load {load:.1f})", flush=True)
    for n in sorted({r[0] for r in rows}):
        ours = [r for r in rows if r[0] == n and r[1] == "project"]
        theirs = [r for r in rows if r[0] == n and r[1] == "official"]
        t_o, t_t = min(r[2] for r in ours), min(r[2] for r in theirs)
        c_o, c_t = min(r[5] for r in ours), min(r[5] for r in theirs)
        print(f"patches={n} wall: project best {t_o:.2f} s / official best {t_t:.2f} s = {t_o / t_t:.2f}; "
              f"CPU time: {c_o:.2f} / {c_t:.2f} s = {c_o / c_t:.2f}; "
              f"peak RSS {max(r[3] for r in ours):.2f} vs {max(r[3] for r in theirs):.2f} GB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patches", type=int, default=4096)
    ap.add_argument("--attention", default="nystrom", choices=["nystrom", "exact"])
    ap.add_argument("--short-exact", action="store_true",
                    help="departure: converged-limit attention on the 7-token genomic sequences")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--official", help="checkout of the authors' repository: time their network")
    ap.add_argument("--compare", help="comma-separated bag sizes: ours and theirs, alternating")
    ap.add_argument("--rounds", type=int, default=2, help="with --compare: pairs of runs per size")
    a = ap.parse_args()
    if a.compare:
        if not a.official:
            ap.error("--compare needs --official DIR")
        compare(a)
    else:
        measure(a)


if __name__ == "__main__":
    main()
