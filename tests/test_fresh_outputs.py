"""No stale completion (issue 19, item 6): a command that fails leaves no output, its own or
an earlier run's, that a later step or a rerun could take for a finished one. One shared
helper, :func:`cmta_pipeline.fileio.fresh_outputs`; one test per command that writes a
folder, each rerun failing on bad input after a (faked) earlier run. Files that are not the
command's outputs, and the resume state of training and extraction, are left alone: the
negative control of each test, through the same code path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmta_pipeline.cli import main
from cmta_pipeline.fileio import Glob, atomic_output, fresh_outputs


def _earlier_run(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("from an earlier run\n")


def _left(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_fresh_outputs_removes_the_marker_first_and_cleans_up_after_a_failure(tmp_path):
    _earlier_run(tmp_path, ["done.json", "a.tsv", "km_x.png", "km_y.png", "keep.txt", "sub/b.tsv"])
    seen = []
    with fresh_outputs(tmp_path, ["a.tsv", Glob("km_*.png"), "sub"], marker="done.json"):
        seen = _left(tmp_path)  # on entry: the earlier run is gone, other files stay
        (tmp_path / "a.tsv").write_text("new\n")
        (tmp_path / "done.json").write_text("{}\n")
    assert seen == [".done.json.lock", "keep.txt"]  # the lock of this run, removed when it ends
    assert _left(tmp_path) == ["a.tsv", "done.json", "keep.txt"]  # a run that succeeds keeps its files
    with pytest.raises(RuntimeError):
        with fresh_outputs(tmp_path, ["a.tsv"], marker="done.json"):
            with atomic_output(tmp_path / "a.tsv") as tmp:
                tmp.write_text("half")
            raise RuntimeError("fails after writing a.tsv")
    assert _left(tmp_path) == ["keep.txt"]
    # an absolute marker outside the folder (cmta tile's status file)
    status = tmp_path / "elsewhere" / "s.json"
    _earlier_run(status.parent, ["s.json"])
    with fresh_outputs(tmp_path / "out", [], marker=status):
        assert not status.exists()


def _fails(capsys, args) -> str:
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    return err


def test_genomics(tmp_path, capsys):
    out = tmp_path / "genomics"
    _earlier_run(out, ["families.tsv", "features.tsv", "patients.tsv", "dropped.tsv", "matrix.tsv.gz",
                       "audit.tsv", "notes.txt"])
    fams = tmp_path / "f.csv"
    fams.write_text("F1\nA\n")
    _fails(capsys, ["genomics", str(tmp_path / "missing.csv"), "--families", str(fams), "-o", str(out)])
    assert _left(out) == ["notes.txt"]


def test_cohort(tmp_path, capsys):
    out = tmp_path / "cohort"
    _earlier_run(out, ["folds.json", "cohort.tsv", "audit.tsv", "folds/fold_0/fold.json",
                       "folds/fold_0/patients.tsv", "notes.txt"])
    _fails(capsys, ["cohort", str(tmp_path / "no_genomics"), "-o", str(out)])
    assert _left(out) == ["notes.txt"]


def test_train_fold(tmp_path, capsys):
    out = tmp_path / "train" / "snn" / "fold_0"
    _earlier_run(out, ["summary.json", "model.pt", "epochs.tsv", "predictions.tsv", "train_predictions.tsv",
                       ".resume.pt"])
    _fails(capsys, ["train", "--cohort", str(tmp_path / "no_cohort"), "--fold", "0", "--model", "snn",
                    "-o", str(out)])
    assert _left(out) == [".resume.pt"]  # the resume state of a killed run stays


def test_report_and_compare(tmp_path, capsys):
    out = tmp_path / "report"
    _earlier_run(out, ["report.html", "summary.md", "metrics.tsv", "metrics_summary.tsv", "cindex.tsv",
                       "cindex_summary.tsv", "cindex_per_fold.png", "km_cmta.png", "km_cmta.svg", "notes.txt"])
    _fails(capsys, ["report", str(tmp_path / "no_train"), "-o", str(out)])
    assert _left(out) == ["notes.txt"]
    out = tmp_path / "compare"
    _earlier_run(out, ["compare.md", "compare.tsv", "table1_cindex_harrell.tsv", "compare_cindex_harrell.png",
                       "notes.txt"])
    _fails(capsys, ["compare", str(tmp_path / "no_report"), "-o", str(out)])
    assert _left(out) == ["notes.txt"]


def test_heatmap(tmp_path, capsys):
    out = tmp_path / "heatmaps" / "cmta"
    _earlier_run(out, ["heatmaps.tsv", "s1.attention.h5", "s1.heatmap.png", "notes.txt"])
    _fails(capsys, ["heatmap", "--run-dir", str(tmp_path / "no_run"), "--cohort", str(tmp_path / "no_cohort"),
                    "--features-dir", str(tmp_path), "-o", str(out)])
    assert _left(out) == ["notes.txt"]


def test_predict(tmp_path, capsys):
    out = tmp_path / "predict" / "cmta"
    _earlier_run(out, ["risk.tsv", "notes.txt"])
    _fails(capsys, ["predict", "--run-dir", str(tmp_path / "no_run"), "--cohort", str(tmp_path / "no_cohort"),
                    "-o", str(out / "risk.tsv")])
    assert _left(out) == ["notes.txt"]


def test_tile(tmp_path, capsys):
    out = tmp_path / "tiles" / "s1"
    status = tmp_path / "tiles" / "s1.tile.json"
    _earlier_run(out, ["s1.coords.h5", "s1.qc.png", "notes.txt"])
    status.write_text(json.dumps({"status": "ok"}))
    err = _fails(capsys, ["tile", str(tmp_path / "s1.svs"), "-o", str(out), "--status", str(status)])
    assert "s1.svs" in err
    assert _left(out) == ["notes.txt"]
    assert json.loads(status.read_text())["status"] == "failed"  # the failure, recorded as before


def test_tile_summary(tmp_path, capsys):
    out = tmp_path / "tiles"
    _earlier_run(out, ["summary.tsv", "failed_slides.tsv", "s1.tile.json"])
    (out / "bad.tile.json").write_text("{not json")
    _fails(capsys, ["tile-summary", str(out / "bad.tile.json"), "-o", str(out)])
    assert _left(out) == ["bad.tile.json", "s1.tile.json"]


def test_extract(tmp_path, capsys):
    out = tmp_path / "features"
    _earlier_run(out, ["s1.features.h5", "s1.pt", ".s1.features.partial", ".s1.features.partial.json",
                       "s2.features.h5", "s2.pt", "notes.txt"])
    _fails(capsys, ["extract", str(tmp_path / "s1.svs"), str(tmp_path / "s1.coords.h5"),
                    str(tmp_path / "s2.svs"), str(tmp_path / "s2.coords.h5"), "-o", str(out),
                    "--weights", str(tmp_path / "no_weights.pth"), "--device", "cpu"])
    # both slides' earlier features are gone (s2 was never reached); the partial rows a
    # killed run resumes from stay
    assert _left(out) == [".s1.features.partial", ".s1.features.partial.json", "notes.txt"]


def test_demo_cohort(tmp_path, capsys):
    out = tmp_path / "demo"
    _earlier_run(out, ["planted.json", "genomics.csv", "patients.tsv", "slides/P-001-DX1.tif", "notes.txt"])
    _fails(capsys, ["demo-cohort", "--families", str(tmp_path / "no_families.csv"), "-o", str(out)])
    assert _left(out) == ["notes.txt"]
