"""The training loop: learning on a planted signal, honest selection, resume, sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _training_helpers import killable_fold

from cmta_pipeline.errors import CMTAError
from cmta_pipeline.models import build_model
from cmta_pipeline.training import (
    Patient,
    TrainSettings,
    class_weights,
    evaluate,
    subsample,
    train_fold,
)
from cmta_pipeline.training.synthetic import synthetic_cohort

SIZES = (8, 12, 16, 10, 20, 14)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cmta_run(shuffle: bool):
    train = synthetic_cohort(200, SIZES, 64, seed=0, shuffle=shuffle)[:120]
    heldout = synthetic_cohort(200, SIZES, 64, seed=0)[120:]
    torch.manual_seed(0)
    model = build_model("cmta", list(SIZES), path_dim=64)
    # published optimiser settings, 3 epochs
    return train_fold(model, train, {"heldout": heldout}, TrainSettings(epochs=3))


@pytest.mark.slow
def test_cmta_learns_a_planted_signal_and_not_shuffled_labels():
    res = _cmta_run(shuffle=False)
    assert res.metrics["heldout_cindex"] >= 0.75
    assert res.selection == "final" and res.selected_epoch == 3 and not res.optimistic
    control = _cmta_run(shuffle=True)
    assert abs(control.metrics["heldout_cindex"] - 0.5) < 0.12


def _small_sets():
    pats = synthetic_cohort(90, SIZES, 16, bag_size=(4, 8), seed=3)
    return pats[:50], {"inner_val": pats[50:70], "heldout": pats[70:]}


def test_predictions_table_and_history():
    train, sets = _small_sets()
    res = train_fold(build_model("snn", list(SIZES)), train, sets, TrainSettings(epochs=2))
    df = res.predictions
    assert len(df) == 40 and set(df["set"]) == {"inner_val", "heldout"}
    surv = df[[f"survival_{i}" for i in range(1, 5)]].to_numpy()
    haz = df[[f"hazard_{i}" for i in range(1, 5)]].to_numpy()
    assert np.allclose(df["risk"], -surv.sum(1), atol=1e-6)
    assert np.allclose(surv, np.cumprod(1 - haz, 1), atol=1e-6)
    assert (df["event"] == 1 - df["censorship"]).all()
    assert [r["epoch"] for r in res.history] == [1, 2]
    for key in ("train_loss", "train_cindex", "heldout_cindex", "inner_val_loss"):
        assert key in res.history[0]
    # the metrics are those of the returned model on the returned predictions
    held = df[df["set"] == "heldout"]
    m, _ = evaluate(build_model("snn", list(SIZES)), [], None)
    assert math.isnan(m["cindex"])
    from cmta_pipeline.training import cindex

    assert res.metrics["heldout_cindex"] == pytest.approx(
        cindex(held["risk"], held["time"], held["censorship"]))


def test_selection_modes():
    train, sets = _small_sets()
    s = TrainSettings(epochs=4, optimizer="adam", lr=1e-3, selection="best_heldout")
    res = train_fold(build_model("snn", list(SIZES)), train, sets, s)
    scores = [r["heldout_cindex"] for r in res.history]
    assert res.optimistic and res.selected_epoch == int(np.argmax(scores)) + 1
    assert res.metrics["heldout_cindex"] == pytest.approx(max(scores))

    s = TrainSettings(epochs=6, optimizer="adam", lr=1e-3, selection="early_stopping",
                      patience=1, min_epochs=1)
    res = train_fold(build_model("snn", list(SIZES)), train, sets, s)
    losses = [r["inner_val_loss"] for r in res.history]
    assert not res.optimistic
    assert res.selected_epoch == int(np.argmin(losses)) + 1
    assert res.metrics["inner_val_loss"] == pytest.approx(min(losses), rel=1e-5)
    with pytest.raises(CMTAError, match="inner_val"):
        train_fold(build_model("snn", list(SIZES)), train, {"heldout": sets["heldout"]}, s)


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_model(tmp_path):
    train, sets = _small_sets()
    s = TrainSettings(epochs=3)

    def run(state, stop_at=None):
        return killable_fold(lambda: build_model("dualtrans", list(SIZES), path_dim=16),
                             train, sets, s, state, stop_at)

    straight = run(None)
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        run(state, stop_at=2)
    assert state.is_file()
    resumed = run(state)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for k, v in straight.state_dict.items():
        assert torch.allclose(v, resumed.state_dict[k], atol=1e-6), k
    assert resumed.metrics["heldout_cindex"] == pytest.approx(straight.metrics["heldout_cindex"])
    # another model with the same settings: the state is not reused
    state.unlink()
    with pytest.raises(KeyboardInterrupt):
        run(state, stop_at=1)
    other_model = train_fold(build_model("dualtrans", list(SIZES), path_dim=16, ppeg=False),
                             train, sets, s, state_path=state, resume_key={"ppeg": False})
    assert [r["epoch"] for r in other_model.history] == [1, 2, 3]
    # other settings: the stale state is ignored, training starts afresh
    other = train_fold(build_model("snn", list(SIZES)), train, sets,
                       TrainSettings(epochs=1), state_path=state)
    assert [r["epoch"] for r in other.history] == [1]


def test_bag_cap_subsamples_at_training_only():
    rng = np.random.default_rng(0)
    bag = torch.arange(100, dtype=torch.float32).unsqueeze(1)
    sub = subsample(bag, 10, rng)
    assert sub.shape == (10, 1) and torch.all(sub[1:, 0] > sub[:-1, 0])  # order kept
    assert torch.equal(subsample(bag, 10, np.random.default_rng(0)), sub)  # seeded
    assert subsample(bag, 0, rng) is bag and subsample(bag, 200, rng) is bag

    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(4))

        def forward(self, x_path, x_omics):
            seen.append((self.training, x_path.shape[0]))
            h = torch.sigmoid(self.w + x_path.mean()).unsqueeze(0)
            s = torch.cumprod(1 - h, 1)
            return {"hazards": h, "survival": s, "risk": -s.sum(1)}

    pats = [Patient(f"P{i}", torch.randn(50, 3), None, i % 4, 10.0 + i, i % 2) for i in range(8)]
    train_fold(Spy(), pats[:4], {"heldout": pats[4:]},
               TrainSettings(epochs=1, max_train_patches=20, weighted_sampler=False))
    assert {n for t, n in seen if t} == {20}
    assert {n for t, n in seen if not t} == {50}


def test_weighted_sampler_balances_time_bin_by_censorship_classes():
    pats = [Patient(str(i), None, None, label=0, time=1.0, censorship=0) for i in range(6)]
    pats += [Patient("x", None, None, label=3, time=9.0, censorship=1)]
    w = class_weights(pats)
    assert w.sum() == pytest.approx(1.0)
    assert w[-1] == pytest.approx(0.5) and w[:6].sum() == pytest.approx(0.5)


def test_bad_settings_are_refused():
    with pytest.raises(CMTAError, match="selection"):
        TrainSettings(selection="best_val").validate()
    with pytest.raises(CMTAError, match="similarity"):
        TrainSettings(similarity="l2").validate()


# --------------------------------------------------------------------------- cmta train


@pytest.fixture(scope="session")
def blca_cohort(tcga_dir, tmp_path_factory):
    """The real BLCA genomics with the published splits and a 10 % inner validation split."""
    from cmta_pipeline.cli import main

    root = tmp_path_factory.mktemp("blca")
    assert main(["genomics", str(tcga_dir / "tcga_blca_all_clean.csv.gz"),
                 "--families", str(tcga_dir / "signatures.csv"), "-o", str(root / "genomics")]) == 0
    assert main(["cohort", str(root / "genomics"), "-o", str(root / "cohort"),
                 "--splits", str(tcga_dir / "splits/5foldcv/tcga_blca"),
                 "--inner-val-fraction", "0.1"]) == 0
    return root


@pytest.mark.slow
def test_train_command_outputs(blca_cohort, tmp_path, capsys):
    import json

    import pandas as pd

    from cmta_pipeline.cli import main
    from cmta_pipeline.cohort import load_fold
    from cmta_pipeline.training.fold import load_checkpoint

    out = tmp_path / "snn0"
    cohort = str(blca_cohort / "cohort")
    rc = main(["train", "--cohort", cohort, "--fold", "0", "--model", "snn",
               "-o", str(out), "--epochs", "2", "--threads", "1"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "epochs.tsv", "model.pt", "predictions.tsv", "summary.json", "train_predictions.tsv"]  # no temp or resume file
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimistic"] is False and summary["selected_epoch"] == 2
    assert summary["recipe"] == "cmta" and summary["protocol"] == "honest"
    assert summary["optimistic_reasons"] == []
    epochs = pd.read_csv(out / "epochs.tsv", sep="\t")
    assert list(epochs["epoch"]) == [1, 2] and list(epochs["selected"]) == [0, 1]
    fd = load_fold(cohort, 0)
    heldout = set(fd.patients.index[fd.patients["split"] == "heldout"])
    preds = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert set(preds["case_id"]) == heldout and len(preds) == len(heldout)
    assert {"risk", "hazard_4", "survival_4", "time", "event"} <= set(preds.columns)

    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert ckpt["model"]["name"] == "snn" and ckpt["model"]["omic_sizes"] == fd.omic_sizes
    model, _ = load_checkpoint(out / "model.pt")
    case = preds["case_id"].iloc[0]
    with torch.no_grad():
        risk = model(None, [torch.from_numpy(a) for a in fd.omics[case]])["risk"].item()
    assert risk == pytest.approx(preds["risk"].iloc[0], rel=1e-4)

    # the published protocol is available, and flagged
    rc = main(["train", "--cohort", cohort, "--fold", "0", "--model", "snn", "-o",
               str(tmp_path / "opt"), "--epochs", "2", "--selection", "best_heldout"])
    assert rc == 0 and json.loads((tmp_path / "opt" / "summary.json").read_text())["optimistic"]

    capsys.readouterr()
    assert main(["train", "--cohort", cohort, "--fold", "7", "--model", "snn", "-o",
                 str(tmp_path / "bad")]) == 2
    assert "fold 7" in capsys.readouterr().err
    assert main(["train", "--cohort", cohort, "--fold", "0", "--model", "cmta", "-o",
                 str(tmp_path / "bad")]) == 2
    assert "--features-dir" in capsys.readouterr().err


def test_train_command_with_patch_features(blca_cohort, tmp_path):
    import json

    import h5py
    import pandas as pd

    from cmta_pipeline.cli import main

    cases = pd.read_csv(blca_cohort / "genomics" / "patients.tsv", sep="\t")["case_id"][:36]
    rng = np.random.default_rng(0)
    feats = tmp_path / "features"
    feats.mkdir()
    rows = []
    for i, c in enumerate(cases):
        for j in range(1 + i % 2):  # some patients have two slides
            sid = f"{c}-S{j}"
            rows.append({"slide_id": sid, "case_id": c})
            with h5py.File(feats / f"{sid}.features.h5", "w") as f:
                f["features"] = rng.standard_normal((int(rng.integers(5, 40)), 24)).astype("float32")
                f["coords"] = np.zeros((len(f["features"]), 2), dtype="int64")
    pd.DataFrame(rows).to_csv(tmp_path / "slides.tsv", sep="\t", index=False)
    assert main(["cohort", str(blca_cohort / "genomics"), "-o", str(tmp_path / "cohort"),
                 "--slides", str(tmp_path / "slides.tsv"), "--n-folds", "3"]) == 0
    out = tmp_path / "cmta0"
    rc = main(["train", "--cohort", str(tmp_path / "cohort"), "--fold", "0", "--model", "cmta",
               "--features-dir", str(feats), "-o", str(out), "--epochs", "1", "--threads", "1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["path_dim"] == 24 and summary["n_left_out_without_slides"] == 0
    assert sum(summary["n_patients"].values()) == 36
    assert len(pd.read_csv(out / "predictions.tsv", sep="\t")) == summary["n_patients"]["heldout"]


def test_l1_penalty_is_added_to_the_training_loss():
    train, sets = _small_sets()

    def first_loss(l1):
        torch.manual_seed(0)
        m = build_model("snn", list(SIZES))
        penalty = sum(w.abs().sum() for w in m.parameters()).item()
        res = train_fold(m, train, {}, TrainSettings(epochs=1, lr=1e-9, l1=l1))
        return res.history[0]["train_loss"], res.history[0]["train_sur"], penalty

    loss0, sur0, _ = first_loss(0.0)
    loss1, sur1, penalty = first_loss(1e-3)
    assert loss0 == pytest.approx(sur0)
    assert loss1 - sur1 == pytest.approx(1e-3 * penalty, rel=1e-3)


def test_a_non_finite_loss_names_its_patient_and_steps_do_not_wait_for_the_device(monkeypatch):
    """Losses and risks stay on the device (no host sync per step: a GPU would stall on
    small bags); finiteness is checked every 32 steps and at the end of the epoch, and the
    error still names the epoch and the first patient whose loss was not finite."""
    import sys

    from cmta_pipeline.training import loop

    train, _ = _small_sets()
    reads = []
    for name in ("__float__", "__bool__", "item", "tolist"):
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name, **kw):
            caller = sys._getframe(1).f_code.co_filename
            if caller.endswith(("training/loop.py", "training/losses.py")):
                reads.append(_name)
            return _real(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, spy)
    torch.manual_seed(0)
    res = train_fold(build_model("snn", list(SIZES)), train, {},
                     TrainSettings(epochs=1, weighted_sampler=False))
    assert np.isfinite(res.history[0]["train_loss"])
    # 50 steps: two checks (after step 32, at the end) and the sums and risks read once,
    # instead of 4 reads a step before
    assert len(reads) <= 6, reads
    monkeypatch.undo()
    bad = train[37]
    nan = [torch.full_like(o, float("nan")) for o in bad.omics]
    train[37] = type(bad)(bad.case_id, bad.bag, nan, bad.label, bad.time, bad.censorship)
    torch.manual_seed(0)
    with pytest.raises(CMTAError, match=rf"loss is nan at epoch 1, patient {bad.case_id};"):
        train_fold(build_model("snn", list(SIZES)), train, {},
                   TrainSettings(epochs=1, weighted_sampler=False))
    assert loop.FINITE_CHECK_STEPS == 32


def test_reference_recipe_is_the_baselines_own_and_cmta_changes_nothing(caplog):
    from cmta_pipeline.training.recipes import apply_recipe

    s = TrainSettings()
    assert apply_recipe("mcat", "cmta", s) == (s, "cmta")
    ref, used = apply_recipe("mcat", "reference", s)
    assert used == "reference"
    assert (ref.optimizer, ref.lr, ref.weight_decay, ref.grad_accum, ref.epochs, ref.l1) == (
        "adam", 2e-4, 1e-5, 32, 20, 0.0)
    snn, _ = apply_recipe("snn", "reference", s)
    assert snn.l1 == pytest.approx(1e-4 * 32)  # MCAT's lambda_reg, added after loss / gc
    assert apply_recipe("porpoise", "reference", s)[0].optimizer == "adam"
    assert apply_recipe("cmta", "reference", s) == (s, "reference")  # its run.sh is the default
    with caplog.at_level("WARNING"):
        assert apply_recipe("transmil", "reference", s) == (s, "cmta")  # none: cmta's, said so
    assert "no reference recipe" in caplog.text
    with pytest.raises(CMTAError, match="recipe"):
        apply_recipe("mcat", "theirs", s)


def test_train_command_records_recipe_protocol_and_labels_from_all(blca_cohort, tmp_path, monkeypatch):
    """--recipe reference trains with the baseline's settings (epochs cut to 1 here) and says
    so; a cohort cut on every patient (labels_from all) makes even a final-epoch run OPTIMISTIC."""
    import json
    import shutil

    from cmta_pipeline.cli import main
    from cmta_pipeline.training import recipes

    monkeypatch.setitem(recipes.REFERENCE, "snn", {**recipes.REFERENCE["snn"], "epochs": 1})
    cohort = tmp_path / "cohort"
    shutil.copytree(blca_cohort / "cohort", cohort)
    info = json.loads((cohort / "folds.json").read_text())
    (cohort / "folds.json").write_text(json.dumps({**info, "labels_from": "all"}))
    out = tmp_path / "snn_ref"
    assert main(["train", "--cohort", str(cohort), "--fold", "0", "--model", "snn", "-o", str(out),
                 "--recipe", "reference", "--protocol", "paper", "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"] == "reference" and summary["protocol"] == "paper"
    assert summary["selection"] == "final" and summary["optimistic"] is True
    assert any("labels_from: all" in r for r in summary["optimistic_reasons"])
    settings = torch.load(out / "model.pt", weights_only=True)["settings"]
    assert (settings["optimizer"], settings["grad_accum"], settings["epochs"]) == ("adam", 32, 1)
    assert settings["amp"] is False  # protocol paper: fp32, as the authors (no autocast on CUDA)
    from cmta_pipeline.training.device import amp_dtype

    assert amp_dtype(torch.device("cuda"), settings["amp"]) is None
    assert torch.load(out / "model.pt", weights_only=True)["optimistic"] is True
