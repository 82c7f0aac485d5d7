"""GPU readiness, checked on CPU: the job's CPUs and readers, device indices, the fp32
fallback on a NaN cosine, equal precision in evaluation and prediction, resume with a
GradScaler, and the GPU check's own comparisons (which must fail on wrong features)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _training_helpers import killable_fold

from cmta_pipeline import compute
from cmta_pipeline.errors import CMTAError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MB = 1024**2


# ---------------------------------------------------------------- CPUs and readers


def _cgroup(tmp_path, proc: str, files: dict[str, str]):
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    root.mkdir(parents=True, exist_ok=True)
    pc = tmp_path / "proc_cgroup"
    pc.write_text(proc)
    return root, pc


def test_cgroup_v2_quota_is_the_smallest_on_the_path(tmp_path):
    root, pc = _cgroup(tmp_path, "0::/job/step\n", {
        "job/cpu.max": "250000 100000\n",  # 2.5 CPUs for the job
        "job/step/cpu.max": "max 100000\n",  # no limit of its own
        "cpu.max": "max 100000\n",
    })
    assert compute.cgroup_cpu_quota(root, pc) == 2.5


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    root, pc = _cgroup(tmp_path, "5:cpu,cpuacct:/slurm/uid_1/job_7\n4:memory:/x\n", {
        "cpu,cpuacct/slurm/uid_1/job_7/cpu.cfs_quota_us": "300000\n",
        "cpu,cpuacct/slurm/uid_1/job_7/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })
    assert compute.cgroup_cpu_quota(root, pc) == 3.0
    root2, pc2 = _cgroup(tmp_path / "b", "0::/\n", {"cpu.max": "max 100000\n"})
    assert compute.cgroup_cpu_quota(root2, pc2) is None


def test_available_cpus_takes_affinity_quota_and_slurm(tmp_path, monkeypatch):
    monkeypatch.setattr(compute, "affinity_cpus", lambda: 16)
    root, pc = _cgroup(tmp_path, "0::/job\n", {"job/cpu.max": "250000 100000\n"})
    none_root, none_pc = _cgroup(tmp_path / "n", "0::/\n", {})
    # OMP_NUM_THREADS=1 (which makes `nproc` print 1) does not shrink the job
    assert compute.available_cpus({"OMP_NUM_THREADS": "1"}, none_root, none_pc) == 16
    assert compute.available_cpus({}, root, pc) == 2  # 2.5 CPUs of quota
    assert compute.available_cpus({"SLURM_CPUS_PER_TASK": "6"}, none_root, none_pc) == 6
    assert compute.available_cpus({"SLURM_CPUS_ON_NODE": "4"}, none_root, none_pc) == 4
    assert compute.available_cpus({"SLURM_CPUS_PER_TASK": "6"}, root, pc) == 2
    # per task wins over the node's count; malformed values are ignored
    assert compute.slurm_cpus({"SLURM_CPUS_PER_TASK": "3", "SLURM_CPUS_ON_NODE": "32"}) == 3
    assert compute.slurm_cpus({"SLURM_CPUS_PER_TASK": "x"}) is None
    root3, pc3 = _cgroup(tmp_path / "q", "0::/j\n", {"j/cpu.max": "50000 100000\n"})
    assert compute.available_cpus({}, root3, pc3) == 1  # half a CPU: still one


def test_readers_sized_from_cpus_and_shared_memory(monkeypatch):
    item = compute.batch_bytes(32, 224)  # 4.8 MB per item of 32 patches, 2 in flight per reader
    assert round(item / MB, 1) == 4.6
    big = compute.plan_readers(True, cpus=16, shm_free=64 * 1024 * MB)
    assert (big.batch_size, big.workers, big.threads, big.item_patches) == (256, 14, 2, 32)
    assert big.warning is None
    # 100 MB free: half of it holds 5 readers x 2 items of 4.6 MB; said, not silent
    small = compute.plan_readers(True, cpus=16, shm_free=100 * MB)
    assert small.workers == 5 and "/dev/shm has 100 MB free: 5 of 14 readers" in small.warning
    # items of patches as read (512 px, resized on the GPU) take more
    raw = compute.plan_readers(True, cpus=16, shm_free=1024 * MB, item_px=512)
    assert raw.workers == 10 and "10 of 14" in raw.warning
    none = compute.plan_readers(True, cpus=16, shm_free=5 * MB)
    assert none.workers == 0 and "reading in the main process" in none.warning
    # no /dev/shm at all is not "no limit": on Linux, read in the main process, and say so
    monkeypatch.setattr(compute.sys, "platform", "linux")
    missing = compute.plan_readers(True, cpus=16, shm_free=None)
    assert missing.workers == 0 and "no /dev/shm" in missing.warning
    monkeypatch.setattr(compute, "shm_free_bytes", lambda path="/dev/shm": None)
    assert compute.plan_readers(True, cpus=16).workers == 0
    monkeypatch.setattr(compute.sys, "platform", "darwin")  # no /dev/shm file system there
    assert compute.plan_readers(True, cpus=16, shm_free=None).workers == 14
    assert compute.plan_readers(True, cpus=16, shm_free=64 * 1024 * MB,
                                gpu_memory=6 * 1024 * MB).batch_size == 64
    cpu = compute.plan_readers(False, cpus=8, shm_free=64 * 1024 * MB)
    assert (cpu.batch_size, cpu.workers, cpu.threads, cpu.item_patches) == (32, 1, 8, 32)
    given = compute.plan_readers(True, batch_size=8, workers=5, threads=3, cpus=16, shm_free=0)
    assert (given.batch_size, given.workers, given.threads) == (8, 5, 3)  # as asked
    with pytest.raises(CMTAError, match="--batch-size"):
        compute.plan_readers(False, batch_size=0, cpus=2)


def test_readers_resize_on_the_gpu_unless_shared_memory_is_short(monkeypatch, caplog):
    from cmta_pipeline.features import settings

    monkeypatch.setattr(settings, "available_cpus", lambda: 16)
    cuda = torch.device("cuda")
    opts = settings.ExtractOptions()
    for free, on_device in ((64 * 1024 * MB, True), (100 * MB, False)):
        monkeypatch.setattr(compute, "shm_free_bytes", lambda path="/dev/shm", f=free: f)
        plan, dev = settings.reading_plan(cuda, opts, 224, "tiles", 512)
        assert dev is on_device
    assert "/dev/shm has 100 MB free: 5 of 14" in caplog.text  # said, not silent
    assert settings.reading_plan(cuda, opts, 224, "openslide", 512)[1] is False
    assert settings.reading_plan(torch.device("cpu"), opts, 224, "tiles", 512)[1] is False


def test_extract_uses_the_job_cpus(monkeypatch):
    from cmta_pipeline.features import settings as extract

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    monkeypatch.setattr(compute, "affinity_cpus", lambda: 64)
    monkeypatch.setattr(compute, "shm_free_bytes", lambda path="/dev/shm": 64 * 1024 * MB)
    plan = extract.default_batching(torch.device("cuda"), None, None)
    assert (plan.batch_size, plan.workers) == (256, 4)


# ---------------------------------------------------------------- device indices


@pytest.fixture
def one_fake_gpu(monkeypatch):
    made_current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    return made_current


def test_device_index_is_checked_and_made_current(one_fake_gpu):
    from cmta_pipeline.features.settings import resolve_device
    from cmta_pipeline.training import resolve_device as training_device

    with pytest.raises(CMTAError) as e:
        resolve_device("cuda:1")
    msg = str(e.value)
    assert "--device cuda:1" in msg and "sees 1 GPU" in msg and "CUDA_VISIBLE_DEVICES=3" in msg
    assert "\n" not in msg
    with pytest.raises(CMTAError, match="training.device cuda:2"):
        training_device("cuda:2")
    assert one_fake_gpu == []
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert training_device("cuda:0") == torch.device("cuda", 0)
    assert one_fake_gpu == [0, 0]  # set_device: the pin-memory thread follows it
    with pytest.raises(CMTAError, match="only cpu and cuda"):
        resolve_device("meta")


def test_no_gpu_is_a_one_line_error(monkeypatch):
    from cmta_pipeline.features.settings import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(CMTAError, match="no CUDA GPU visible"):
        resolve_device("cuda:0")


# ---------------------------------------------------------------- fp32 fallback on NaN


def test_nan_cosine_falls_back_to_fp32(tmp_path, monkeypatch):
    """A NaN cosine in the check against eager fp32 must send the slide to fp32: the test is
    ``not (cos >= threshold)``, since ``nan < 0.999`` is False and ``min(0.9995, nan)`` is
    0.9995."""
    from _feature_helpers import write_grid_coords, write_tiled_tiff

    from cmta_pipeline.features import ExtractOptions, build_encoder, encode, extract_features

    slide = write_tiled_tiff(tmp_path / "s.tiff", shape=(512, 512))
    coords = write_grid_coords(slide, tmp_path / "s.coords.h5", size0=256, input_px=32)
    calls = []

    def fake_cosine(a, b):
        calls.append(len(a))
        return math.nan

    monkeypatch.setattr(encode, "cosine_min", fake_cosine)
    from cmta_pipeline.features.runner import EncoderRunner

    runs = []
    real_call = EncoderRunner.__call__

    def spy(self, pixels):
        runs.append((self.precision, self.tune))
        return real_call(self, pixels)

    monkeypatch.setattr(EncoderRunner, "__call__", spy)
    model, info = build_encoder("random")
    opts = ExtractOptions(weights="random", device="cpu", batch_size=2, workers=0,
                          precision="bf16", threads=1, check_patches=4, progress=False,
                          compile="off")
    feats, _, meta = extract_features(slide, coords, opts, model=model, info=info)
    assert calls == [2]
    # bf16 on batch 1, its untuned fp32 reference; then batch 2 on a tuned fp32 runner
    # (cuDNN's timed plans on CUDA), not on the check's untuned reference
    assert runs == [("bf16", True), ("fp32", False), ("fp32", True)]
    assert meta["precision"] == "fp32" and "precision_fallback" in meta
    assert math.isnan(meta["precision_check_min_cosine"])
    assert feats.shape == (4, 1024) and np.isfinite(feats).all()


def test_last_batch_is_padded_to_one_shape_on_cuda_only():
    from cmta_pipeline.features import build_encoder
    from cmta_pipeline.features.runner import EncoderRunner

    model, _ = build_encoder("random")
    runner = EncoderRunner(model, torch.device("cpu"), "fp32", pad_to=8)
    assert runner.pad_to is None  # CPU: no cuDNN plans to reuse
    shapes = []
    runner.module.register_forward_pre_hook(lambda m, a: shapes.append(a[0].shape[0]))
    runner.pad_to = 4  # as on CUDA
    px = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    padded = runner(px)
    runner.pad_to = None
    plain = runner(px)
    assert shapes == [4, 3] and padded.shape == (3, 1024)
    torch.testing.assert_close(padded, plain, rtol=1e-4, atol=1e-5)  # padding changes nothing


# ---------------------------------------------------------------- training precision


def test_mixed_precision_choice(monkeypatch):
    from cmta_pipeline.training import device as loop

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert loop.amp_dtype(cpu, True) is None and loop.amp_dtype(cuda, False) is None
    seen = []

    def bf16_supported(including_emulation=True):
        seen.append(including_emulation)
        return including_emulation  # a GPU that only emulates bf16 (e.g. a V100 or T4)

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16_supported)
    assert loop.amp_dtype(cuda, True) == torch.float16 and seen == [False]
    assert loop.grad_scaler(cpu, torch.float16).is_enabled()
    assert not loop.grad_scaler(cpu, torch.bfloat16).is_enabled()
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert loop.amp_dtype(cuda, True) == torch.bfloat16


def _emulate_gpu_amp(monkeypatch, init_scale=None):
    """Training steps under CPU autocast (bf16), as they run under CUDA autocast; with
    ``init_scale``, an enabled GradScaler too (fp16's path)."""
    from cmta_pipeline.training import loop

    monkeypatch.setattr(loop, "amp_dtype", lambda device, amp: torch.bfloat16 if amp else None)
    if init_scale is not None:
        monkeypatch.setattr(loop, "grad_scaler", lambda device, dtype: torch.amp.GradScaler(
            device.type, init_scale=init_scale, growth_interval=2))


def _genomics_and_slides(tmp_path, n=36):
    import h5py

    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(12)]
    df = pd.DataFrame({"case_id": [f"TCGA-AA-{i:04d}" for i in range(n)],
                       "survival_months": rng.uniform(1, 100, n).round(2),
                       "censorship": (np.arange(n) % 3 == 0).astype(int)})
    for g in genes:
        df[f"{g}_rnaseq"] = rng.lognormal(size=n)
    df.to_csv(tmp_path / "t.csv", index=False)
    fam = pd.DataFrame({f"F{k}": genes[2 * k:2 * k + 2] for k in range(6)})
    fam.to_csv(tmp_path / "fam.csv", index=False)
    feats = tmp_path / "features"
    feats.mkdir()
    rows = []
    for i, c in enumerate(df["case_id"]):
        sid = f"{c}-S0"
        rows.append({"slide_id": sid, "case_id": c})
        with h5py.File(feats / f"{sid}.features.h5", "w") as f:
            f["features"] = rng.standard_normal((int(rng.integers(20, 60)), 32)).astype("float32")
    pd.DataFrame(rows).to_csv(tmp_path / "slides.tsv", sep="\t", index=False)
    return feats


def test_heldout_risks_equal_predict_under_mixed_precision(tmp_path, monkeypatch):
    """Training steps run under autocast (emulated here with CPU bf16), but evaluation and
    `cmta predict` both run fp32: the held-out risks `cmta train` writes are the risks
    `cmta predict` gives the same patients, to every written digit."""
    from cmta_pipeline.cli import main

    _emulate_gpu_amp(monkeypatch)
    feats = _genomics_and_slides(tmp_path)
    assert main(["genomics", str(tmp_path / "t.csv"), "--families", str(tmp_path / "fam.csv"),
                 "-o", str(tmp_path / "g")]) == 0
    assert main(["cohort", str(tmp_path / "g"), "-o", str(tmp_path / "c"), "--slides",
                 str(tmp_path / "slides.tsv"), "--n-folds", "3"]) == 0
    assert main(["train", "--cohort", str(tmp_path / "c"), "--fold", "0", "--model", "cmta",
                 "--features-dir", str(feats), "-o", str(tmp_path / "run/fold_0"),
                 "--epochs", "1", "--threads", "1"]) == 0
    oof = pd.read_csv(tmp_path / "run/fold_0/predictions.tsv", sep="\t", dtype=str)
    assert main(["predict", "--run-dir", str(tmp_path / "run"), "--cohort", str(tmp_path / "c"),
                 "--genomics", str(tmp_path / "g"), "--slides", str(tmp_path / "slides.tsv"),
                 "--features-dir", str(feats), "--cases", ",".join(oof["case_id"]),
                 "-o", str(tmp_path / "risk.tsv")]) == 0
    pred = pd.read_csv(tmp_path / "risk.tsv", sep="\t", dtype=str).set_index("case_id")
    assert len(oof) >= 10
    assert list(pred.loc[oof["case_id"], "risk_fold_0"]) == list(oof["risk"])  # as written
    # and the comparison has teeth: the bf16 forward gives other risks
    import json

    from cmta_pipeline.features.files import load_bag
    from cmta_pipeline.genomics import read_genomics_dir
    from cmta_pipeline.predict.risk import load_fold_model, prepare_omics

    summary = json.loads((tmp_path / "c/folds.json").read_text())
    fm = load_fold_model(tmp_path / "run", 0, tmp_path / "run/fold_0", tmp_path / "c", summary,
                         torch.device("cpu"))
    _, matrix, _, _ = read_genomics_dir(tmp_path / "g")
    cases = list(oof["case_id"])
    omics = prepare_omics(fm, matrix.loc[cases], summary)
    differ = 0
    for i, c in enumerate(cases):
        bag = torch.from_numpy(load_bag(feats, [f"{c}-S0"]))
        om = [torch.from_numpy(b[i]) for b in omics]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            r = float(fm.model(bag, om)["risk"].float()[0])
        differ += f"{r:.6g}" != oof["risk"][i]
    assert differ >= len(cases) // 2


# ---------------------------------------------------------------- resume with a scaler


def test_resume_keeps_the_grad_scaler(tmp_path, monkeypatch):
    """fp16's loss scale lives in the resume file: a resumed run skips the same overflowing
    steps as an uninterrupted one. A huge initial scale makes the first steps overflow, so
    a scale lost at resume would skip more steps and give other weights."""
    from cmta_pipeline.models import build_model
    from cmta_pipeline.training import TrainSettings
    from cmta_pipeline.training.synthetic import synthetic_cohort

    _emulate_gpu_amp(monkeypatch, init_scale=2.0**126)
    sizes = (4, 6, 5, 3, 7, 4)
    pats = synthetic_cohort(40, sizes, 8, bag_size=(3, 6), seed=1)
    train, sets = pats[:30], {"heldout": pats[30:]}
    s = TrainSettings(epochs=2)

    def run(state, stop_at=None):
        return killable_fold(lambda: build_model("snn", list(sizes)), train, sets, s, state,
                             stop_at)

    straight = run(None)
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        run(state, stop_at=1)
    saved = torch.load(state, weights_only=True)["scaler"]
    assert 0 < saved["scale"] < 2.0**126  # it backed off from the overflows
    resumed = run(state)
    for k, v in straight.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[k], v, rtol=0, atol=0)
    # without the saved scale, the resumed run differs: the check has teeth
    state.unlink()
    with pytest.raises(KeyboardInterrupt):
        run(state, stop_at=1)
    st = torch.load(state, weights_only=True)
    st["scaler"] = {}
    torch.save(st, state)
    lost = run(state)
    assert any(not torch.equal(lost.state_dict[k], v) for k, v in straight.state_dict.items())


# ---------------------------------------------------------------- the GPU check's comparisons


def _features(n=24, d=64, seed=0):
    """Rows as different as real tissue features under calibrated weights."""
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, d, generator=g) + 0.5)


def test_gpu_check_feature_comparison_fails_on_wrong_features():
    import gpu_check

    ref = _features()
    g = torch.Generator().manual_seed(1)
    same = ref + 1e-7 * torch.randn(ref.shape, generator=g)
    assert gpu_check.compare_with_teeth(same, ref, 0.99999, 1e-3)["ok"]
    # every patch given another patch's features
    r = gpu_check.compare_with_teeth(gpu_check.shuffled(ref), ref, 0.999)
    assert not r["ok"] and r["min_cosine"] < 0.99
    # features perturbed by 5%: fail the fp32 bar and the 0.999 bar
    noisy = ref * (1 + 0.05 * torch.randn(ref.shape, generator=g))
    assert not gpu_check.compare_features(noisy, ref, 0.99999, 1e-3)["ok"]
    assert not gpu_check.compare_features(noisy, ref, 0.999)["ok"]
    # one patch wrong is enough; NaN features fail
    one_bad = ref.clone()
    one_bad[5] = ref[6]
    assert not gpu_check.compare_features(one_bad, ref, 0.999)["ok"]
    with_nan = ref.clone()
    with_nan[3, 0] = math.nan
    assert not gpu_check.compare_features(with_nan, ref, 0.999)["ok"]
    assert not gpu_check.compare_features(ref[:-1], ref, 0.999)["ok"]  # rows missing


def test_gpu_check_refuses_a_comparison_without_teeth():
    """Uncalibrated random weights map every patch to nearly the same vector: then shuffled
    features pass too, and the check must report itself as failed, not as passed."""
    import gpu_check

    g = torch.Generator().manual_seed(0)
    base = torch.rand(64, generator=g) + 1
    near_parallel = base + 1e-3 * torch.randn(16, 64, generator=g)
    r = gpu_check.compare_with_teeth(near_parallel, near_parallel.clone(), 0.999)
    assert r["shuffled_fails"] is False and r["ok"] is False


def test_gpu_check_loss_comparison():
    import gpu_check

    assert gpu_check.compare_losses(2.0000001, 2.0, 1e-4)["ok"]
    assert not gpu_check.compare_losses(2.001, 2.0, 1e-4)["ok"]
    assert not gpu_check.compare_losses(math.nan, 2.0, 1e-4)["ok"]
    assert not gpu_check.compare_losses(math.inf, 2.0, 1e-4)["ok"]


@pytest.mark.slow
def test_gpu_check_cmta_step_agrees_with_itself_and_not_with_other_inputs():
    """The step the check runs on two devices, run twice on CPU from the same weights: the
    same loss and update (so a CPU/CUDA difference would be the device's); from another
    model, another loss."""
    import gpu_check

    from cmta_pipeline.models import build_model

    monkey_sizes = [6, 5, 4, 7, 3, 5]
    old = gpu_check.OMIC_SIZES
    gpu_check.OMIC_SIZES = monkey_sizes
    try:
        torch.manual_seed(0)
        model = build_model("cmta", monkey_sizes)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        a = gpu_check.cmta_step(torch.device("cpu"), 40, model=model)
        model.load_state_dict(state)
        b = gpu_check.cmta_step(torch.device("cpu"), 40, model=model)
        torch.manual_seed(1)
        c = gpu_check.cmta_step(torch.device("cpu"), 40, model=build_model("cmta", monkey_sizes))
    finally:
        gpu_check.OMIC_SIZES = old
    assert gpu_check.compare_losses(a["loss_before"], b["loss_before"], 1e-6)["ok"]
    assert gpu_check.compare_losses(a["loss_after"], b["loss_after"], 1e-6)["ok"]
    assert a["loss_after"] != a["loss_before"] and float(a["update"].norm()) > 0
    assert torch.equal(a["update"], b["update"])
    assert not gpu_check.compare_losses(c["loss_before"], a["loss_before"], 1e-4)["ok"]


def test_gpu_check_lists_missing_modules_first(tmp_path, monkeypatch):
    import json

    import gpu_check

    monkeypatch.setattr(gpu_check, "REQUIRED", {"json": "present", "no_such_module_xyz":
                                                "a test of the list", "other_missing_abc": "another"})
    monkeypatch.setattr(gpu_check, "OPTIONAL", {})
    out = tmp_path / "r.json"
    assert gpu_check.main(["--device", "cpu", "--json", str(out)]) == 2
    r = json.loads(out.read_text())
    assert set(r["imports"]["missing"]) == {"no_such_module_xyz", "other_missing_abc"}
    assert "machine" not in r  # nothing ran after the import check


def test_cuda_backend_times_cudnn_plans_as_the_cli_does(monkeypatch):
    """The extraction loop and the GPU check's model timing share one setup: cuDNN plan
    timing on (the old check timed with it off, i.e. other plans than the CLI's)."""
    from cmta_pipeline.features.runner import prepare_backend

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(compute, "available_cpus", lambda *a, **k: 16)
    from cmta_pipeline.features import runner

    monkeypatch.setattr(runner, "available_cpus", lambda *a, **k: 16)
    prepare_backend(torch.device("cuda"), None)
    assert torch.backends.cudnn.benchmark is True
    assert torch.get_num_threads() == 2  # the readers have the other CPUs
    prepare_backend(torch.device("cpu"), None)
    assert torch.get_num_threads() == 16
    prepare_backend(torch.device("cpu"), 3)
    assert torch.get_num_threads() == 3


# ---------------------------------------------------------------- bags read once when they fit


@pytest.mark.slow
def test_bags_from_disk_are_read_once_when_they_fit(tmp_path, monkeypatch):
    """Bags on disk (callables) are kept in memory while they fit in half the memory
    available, so 3 epochs and their evaluations read each bag once; with no room they are
    read at every use. Either way the trained model is the same."""
    from cmta_pipeline.models import build_model
    from cmta_pipeline.training import Patient, TrainSettings, train_fold
    from cmta_pipeline.training.synthetic import synthetic_cohort

    sizes = (4, 6, 5, 3, 7, 4)
    pats = synthetic_cohort(30, sizes, 8, bag_size=(3, 6), seed=2)
    reads: dict[str, int] = {}

    def on_disk(p):
        bag = p.bag.clone()

        def read():
            reads[p.case_id] = reads.get(p.case_id, 0) + 1
            return bag.clone()

        return Patient(p.case_id, read, p.omics, p.label, p.time, p.censorship)

    lazy = [on_disk(p) for p in pats]

    def run(available):
        reads.clear()
        monkeypatch.setattr(compute, "memory_available_bytes", lambda *a, **k: available)
        torch.manual_seed(0)
        res = train_fold(build_model("dualtrans", list(sizes), path_dim=8), lazy[:20],
                         {"heldout": lazy[20:]}, TrainSettings(epochs=3, weighted_sampler=False))
        return res, dict(reads)

    cached, reads_cached = run(10 * MB)
    assert set(reads_cached.values()) == {1} and len(reads_cached) == 30
    uncached, reads_uncached = run(0)
    assert sum(reads_uncached.values()) == 3 * (20 + 10)  # every step and evaluation
    for k, v in cached.state_dict.items():
        assert torch.equal(v, uncached.state_dict[k]), k
    pd.testing.assert_frame_equal(cached.predictions, uncached.predictions)


def test_memory_available_takes_the_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100000000 kB\nMemAvailable: 50000000 kB\n")
    root, pc = _cgroup(tmp_path, "0::/job\n", {"job/memory.max": str(8 * 1024 * MB),
                                                "job/memory.current": str(3 * 1024 * MB)})
    assert compute.memory_available_bytes(root, pc, meminfo) == 5 * 1024 * MB
    root1, pc1 = _cgroup(tmp_path / "v1", "4:memory:/slurm/job_3\n0::/\n", {
        "memory/slurm/job_3/memory.limit_in_bytes": str(4 * 1024 * MB),
        "memory/slurm/job_3/memory.usage_in_bytes": str(1024 * MB),
        "memory/memory.limit_in_bytes": "9223372036854771712"})
    assert compute.memory_available_bytes(root1, pc1, meminfo) == 3 * 1024 * MB
    none_root, none_pc = _cgroup(tmp_path / "n", "0::/\n", {"memory.max": "max\n"})
    assert compute.memory_available_bytes(none_root, none_pc, meminfo) == 50000000 * 1024


# ---------------------------------------------------------------- the GPU check's gates


def test_amp_gate_passes_mixed_precision_and_fails_its_control():
    """The AMP gate on CPU bf16 autocast (the same code as CUDA autocast): the loop's
    mixed-precision step against fp32 passes (loss within 1e-2, gradient cosine >= 0.98);
    the negative control, the same mixed-precision step with the weights rounded to 3
    significant bits, fails it."""
    import gpu_check

    from cmta_pipeline.models import build_model

    sizes = [30, 40, 50, 20, 60, 35]
    old = gpu_check.OMIC_SIZES
    gpu_check.OMIC_SIZES = sizes
    try:
        torch.manual_seed(0)
        model = build_model("cmta", sizes)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        r = gpu_check.amp_gate(torch.device("cpu"), torch.bfloat16, 256, model)
    finally:
        gpu_check.OMIC_SIZES = old
    assert r["ok"] and r["control_fails"], r
    assert r["loss_rel_diff"] <= 1e-2 and r["grad_cosine"] >= 0.98
    assert r["control"]["grad_cosine"] < 0.98 or r["control"]["loss_rel_diff"] > 1e-2
    for k, v in before.items():  # the model is left as it was
        assert torch.equal(model.state_dict()[k], v)
    # the verdict itself: a NaN gradient fails
    g = torch.ones(10, dtype=torch.float64)
    bad = gpu_check.amp_verdict({"loss": 1.0, "grad": g * float("nan")}, {"loss": 1.0, "grad": g})
    assert not bad["ok"]


def test_attention_comparison_has_teeth():
    import gpu_check
    from torch.nn.attention import SDPBackend

    shape = ((1, 2, 40, 16), (1, 2, 24, 16), (1, 2, 24, 16), None)
    r = gpu_check.compare_attention(torch.device("cpu"), shape, SDPBackend.MATH)
    assert r["ok"] and r["shuffled_fails"] and r["min_cosine"] >= 0.999
    # a backend that cannot run here is reported, not failed
    cudnn = getattr(SDPBackend, "CUDNN_ATTENTION", None)
    if cudnn is not None:
        assert gpu_check.compare_attention(torch.device("cpu"), shape, cudnn)["ok"] is None


def test_stages_start_from_the_same_backend_state():
    """A stage that sets threads, cuDNN plan timing and the fp32 flags (as extraction does)
    does not hand them to the next (training never times cuDNN plans)."""
    import gpu_check

    from cmta_pipeline.features.runner import fp32_flags, ieee_fp32

    state = gpu_check.backend_state()
    torch.set_num_threads(3)
    torch.backends.cudnn.benchmark = not state["cudnn_benchmark"]
    ieee_fp32().__enter__()  # left set, as a crashed stage would
    assert gpu_check.backend_state() != state
    gpu_check.restore_backend(state)
    assert gpu_check.backend_state() == state and fp32_flags() == state["fp32"]


def test_gpu_check_warns_when_it_runs_another_torch(tmp_path):
    import gpu_check

    pinned = gpu_check.pinned_torch()
    assert pinned and pinned == torch.__version__.split("+")[0]  # the tests run the pinned one
    assert gpu_check.torch_warning(f"{pinned}+cu130", pinned) is None
    w = gpu_check.torch_warning("2.11.0+cu130", pinned)
    assert "2.11.0+cu130" in w and pinned in w
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "torch-cuda.yaml").write_text("dependencies:\n  - pytorch=2.5.1=cuda*\n")
    assert gpu_check.pinned_torch(tmp_path) == "2.5.1"


def test_prepare_gpu_wheels_fails_without_the_slide(tmp_path):
    r = subprocess.run(["bash", str(REPO / "scripts" / "prepare_gpu_wheels.sh"),
                        str(tmp_path / "gpu")], env={**os.environ, "SLIDE": str(tmp_path / "no.svs"),
                                                     "PIP": "false"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no.svs not found" in r.stderr
    assert not (tmp_path / "gpu").exists()  # nothing downloaded


def test_a_stalled_stage_is_stopped_and_the_next_ones_run(tmp_path, monkeypatch):
    """A stage that hangs (a stalled compile, a stuck loader) is stopped after
    --stage-timeout-s with an error; the following stages still run."""
    import json

    import gpu_check

    def stalls(ctx):
        time.sleep(60)

    monkeypatch.setattr(gpu_check, "STAGES", [("stalls", stalls, True),
                                              ("machine", gpu_check.stage_machine, False)])
    out = tmp_path / "r.json"
    t = time.perf_counter()
    assert gpu_check.main(["--device", "cpu", "--json", str(out), "--stage-timeout-s", "2"]) == 1
    assert time.perf_counter() - t < 40
    r = json.loads(out.read_text())
    assert "ran past 2 s" in r["stalls"]["error"] and r["machine"]["ok"]
