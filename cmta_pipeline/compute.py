"""What this job may use: CPUs, shared memory and the CUDA device, and the reader, batch
and thread counts that follow from them.

A batch job often sees more CPUs than it was given: ``os.cpu_count()`` and ``nproc``
(which follows ``OMP_NUM_THREADS``) are wrong there, ``sched_getaffinity`` misses cgroup
CPU quotas (containers, SLURM with ``ConstrainCores=no``), and SLURM says what it granted in
``SLURM_CPUS_PER_TASK``. :func:`available_cpus` takes the smallest of these.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CMTAError

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
#: Batches each reader process keeps in flight (the DataLoader's ``prefetch_factor``).
PREFETCH = 2
#: Share of the free ``/dev/shm`` the readers' batches may fill.
SHM_SHARE = 0.5


def affinity_cpus() -> int:
    """CPUs this process may run on (its affinity mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _cgroup_paths(proc_cgroup: Path, controller: str = "cpu") -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and its cgroup v1 path for ``controller``."""
    v2 = v1 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif controller in controllers.split(","):
            v1 = path
    return v2, v1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs' worth of time the cgroup quota allows (e.g. 2.5), or None without a quota.

    cgroup v2: ``cpu.max`` ("max 100000" or "<quota> <period>"); v1: ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` (-1 = none). The smallest quota on the path from this process's
    cgroup up to the root counts, as the kernel enforces each level.
    """
    v2, v1 = _cgroup_paths(proc_cgroup)
    quotas: list[float] = []
    if v2 is not None:
        for d in _ancestors(root, v2):
            text = _read(d / "cpu.max")
            if text:
                q, _, period = text.partition(" ")
                if q != "max" and period:
                    quotas.append(int(q) / int(period))
    for base in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
        if not base.is_dir():
            continue
        for d in _ancestors(base, v1 or "/"):
            q, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if q and period and int(q) > 0 and int(period) > 0:
                quotas.append(int(q) / int(period))
        break
    return min(quotas) if quotas else None


def _ancestors(base: Path, cg_path: str) -> list[Path]:
    """``base/<cg_path>`` and each parent folder up to ``base`` (only those that exist)."""
    rel = Path(cg_path.lstrip("/"))
    out = [base / rel, *[base / p for p in rel.parents]]
    return [d for d in out if d.is_dir()]


def memory_available_bytes(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP,
                           meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes this process can still take: ``MemAvailable``, capped by the cgroup's memory
    limit minus its usage (v2 ``memory.max`` / ``memory.current``, v1
    ``memory.limit_in_bytes`` / ``memory.usage_in_bytes``; SLURM enforces ``--mem`` so)."""
    avail: list[int] = []
    text = _read(meminfo)
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            avail.append(int(line.split()[1]) * 1024)
    v2, v1 = _cgroup_paths(proc_cgroup, "memory")
    limits = []
    if v2 is not None:
        limits += [(d / "memory.max", d / "memory.current") for d in _ancestors(root, v2)]
    if (root / "memory").is_dir():
        limits += [(d / "memory.limit_in_bytes", d / "memory.usage_in_bytes")
                   for d in _ancestors(root / "memory", v1 or "/")]
    for lim_file, use_file in limits:
        lim, use = _read(lim_file), _read(use_file)
        if lim and lim.isdigit() and int(lim) < 2**60 and use and use.isdigit():
            avail.append(max(0, int(lim) - int(use)))
    return min(avail) if avail else None


def slurm_cpus(env: dict | None = None) -> int | None:
    """CPUs SLURM granted this task: ``SLURM_CPUS_PER_TASK``, else ``SLURM_CPUS_ON_NODE``
    (set for every job step; the allocation's CPUs on this node)."""
    env = os.environ if env is None else env
    for key in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        v = env.get(key, "").strip()
        if v:
            try:
                n = int(v.split("(")[0].split(",")[0])  # "4", or "4(x2)" in older releases
            except ValueError:
                log.warning("ignoring %s=%r (not a number)", key, v)
                continue
            if n > 0:
                return n
    return None


def available_cpus(env: dict | None = None, root: Path = CGROUP_ROOT,
                   proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this job may use: the smallest of the affinity mask, the cgroup CPU quota
    (rounded down, at least 1) and SLURM's grant. ``OMP_NUM_THREADS`` does not count: it
    limits threads per process, not the job's CPUs."""
    n = affinity_cpus()
    quota = cgroup_cpu_quota(root, proc_cgroup)
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    s = slurm_cpus(env)
    if s is not None:
        n = min(n, s)
    return max(1, n)


def shm_free_bytes(path: str = "/dev/shm") -> int | None:
    """Free bytes of the shared-memory file system the DataLoader's items travel through;
    None if there is none."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


#: Patches per DataLoader item on CUDA: items are joined into the model's batch on the main
#: side, so even a 1,000-patch slide keeps 30 readers busy (whole 256-patch batches as
#: items kept only 4 of them busy).
ITEM_PATCHES = 32


@dataclass(frozen=True)
class ReaderPlan:
    """Batch size, reader processes and torch threads for the extraction loop."""

    batch_size: int
    workers: int
    threads: int | None  # torch CPU threads; None = leave torch's setting
    cpus: int
    why: str
    item_patches: int = ITEM_PATCHES  # patches per DataLoader item
    warning: str | None = None  # fewer readers than the CPUs allow, and why (log it)


def batch_bytes(batch_size: int, input_px: int) -> int:
    """Bytes of one batch of uint8 RGB patches."""
    return batch_size * input_px * input_px * 3


def plan_readers(cuda: bool, batch_size: int | None = None, workers: int | None = None,
                 threads: int | None = None, input_px: int = 224, cpus: int | None = None,
                 shm_free: int | None = -1, gpu_memory: int | None = None,
                 item_px: int | None = None, item_patches: int | None = None) -> ReaderPlan:
    """Sizes for the extraction loop; given values are kept, ``None`` ones are chosen.

    CPU: batch 32 in one item, 1 reader (the model is the bottleneck), torch threads = the
    CPUs. CUDA (reading is the bottleneck): batch 256 (64 on GPUs under 8 GB) in items of
    :data:`ITEM_PATCHES`, readers = CPUs - 2 (the main process and its pin-memory thread
    keep one core each), at most as many as fit half of the free ``/dev/shm`` with
    ``PREFETCH`` items of ``item_px``-px patches (default ``input_px``) each; torch threads
    2. Fewer readers than the CPUs allow (a small ``/dev/shm``; none at all on Linux: read
    in the main process) come with a ``warning`` to log.
    ``shm_free=-1`` reads ``/dev/shm``; ``cpus=None`` calls :func:`available_cpus`.
    """
    cpus = available_cpus() if cpus is None else cpus
    why = [f"{cpus} CPUs"]
    if batch_size is None:
        small_gpu = gpu_memory is not None and gpu_memory < 8 * 1024**3
        batch_size = (64 if small_gpu else 256) if cuda else 32
    if batch_size < 1 or (workers is not None and workers < 0):
        raise CMTAError("--batch-size must be >= 1 and --workers >= 0")
    if item_patches is None:
        item_patches = min(ITEM_PATCHES, batch_size) if cuda else batch_size
    warning = None
    if workers is None:
        workers = max(1, cpus - 2) if cuda else 1
        shm = shm_free_bytes() if shm_free == -1 else shm_free
        workers, warning = _readers_in_shm(workers, shm, PREFETCH * batch_bytes(
            item_patches, item_px or input_px))
        if warning:
            why.append(warning)
    if threads is None:
        threads = cpus if not cuda else min(2, cpus)
    why.append(f"{workers} readers, items of {item_patches} patches, batch {batch_size}, "
               f"{threads} torch threads")
    return ReaderPlan(int(batch_size), int(workers), threads, cpus, "; ".join(why),
                      int(item_patches), warning)


def _readers_in_shm(workers: int, shm: int | None, per_reader: int) -> tuple[int, str | None]:
    """(readers whose items in flight fit half of ``shm`` free bytes, a warning if fewer
    than ``workers``)."""
    if shm is None:
        if sys.platform.startswith("linux"):
            return 0, ("no /dev/shm, through which reader processes hand over patches: "
                       "reading in the main process (slow); mount one, e.g. docker run "
                       "--shm-size 2g")
        return workers, None  # elsewhere shared memory is not a /dev/shm file system
    fit = int(shm * SHM_SHARE // per_reader)
    if fit >= workers:
        return workers, None
    return fit, (f"/dev/shm has {shm / 1024**2:.0f} MB free: {fit} of {workers} readers fit "
                 f"(each keeps {per_reader / 1024**2:.0f} MB of patches in flight, and half "
                 f"of /dev/shm is used)"
                 f"{'; reading in the main process (slow)' if fit == 0 else ''}; give the job "
                 f"more shared memory (docker run --shm-size, a larger /dev/shm) or set "
                 f"--workers")


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a torch device, checked.

    A CUDA index must be one this job sees (``CUDA_VISIBLE_DEVICES`` renumbers from 0); the
    device is made current (``torch.cuda.set_device``) so that the DataLoader's pin-memory
    thread and cuDNN handles live on it rather than on GPU 0.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise CMTAError(f"{option} {name}: not a device (auto, cpu, cuda, cuda:N)") from exc
    if dev.type not in ("cpu", "cuda"):
        raise CMTAError(f"{option} {name}: only cpu and cuda are supported")
    if dev.type == "cpu":
        return dev
    if not torch.cuda.is_available():
        raise CMTAError(f"{option} {name}: no CUDA GPU visible; use auto or cpu")
    n = torch.cuda.device_count()
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if not 0 <= index < n:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise CMTAError(
            f"{option} {name}: this job sees {n} GPU(s) (CUDA_VISIBLE_DEVICES="
            f"{visible if visible is not None else 'unset'}), numbered from 0; "
            f"use cuda or cuda:0{f'..cuda:{n - 1}' if n > 1 else ''}")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
