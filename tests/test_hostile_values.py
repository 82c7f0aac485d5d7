"""Issue 27, numbers, resume files and weights: every non-finite or absurd number from
outside is refused with one line naming the file, the column and the row, nothing written
and nothing previous changed; a corrupt resume file is redone; weights are hashed.

The table ``CASES`` runs each hostile input through the real command (``cmta genomics``,
``cohort``, ``train``, ``predict``, ``tile``, ``extract``); ``test_clean_inputs_pass`` is
their negative control: the same commands on the unmodified inputs succeed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cmta_pipeline.cli import main
from cmta_pipeline.errors import CMTAError
from cmta_pipeline.genomics.tables import GENE_VALUE_LIMIT, MAX_SURVIVAL_MONTHS, numeric_block

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = Path(__file__).parent / "data"
SPEC = DATA / "cbioportal" / "spec_msk_style"
GENES = ["TP53", "EGFR", "KRAS", "MYC", "PTEN", "BRCA1"]
FAMILIES = {"Tumor Suppressor Genes": ["TP53", "PTEN"], "Oncogenes": ["EGFR", "KRAS"],
            "Protein Kinases": ["EGFR", "MYC"], "Cell Differentiation Markers": ["BRCA1", "MYC"],
            "Transcription Factors": ["MYC", "TP53"], "Cytokines and Growth Factors": ["KRAS", "PTEN"]}
N = 40


def _case(i: int) -> str:
    return f"TCGA-AA-{i:04d}"


def _table() -> pd.DataFrame:
    """A small MCAT/CMTA wide table (made-up values): 40 patients, 6 genes x rnaseq/cnv."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"case_id": [_case(i) for i in range(N)],
                       "slide_id": [f"{_case(i)}-01Z-00-DX1" for i in range(N)],
                       "survival_months": rng.uniform(1, 100, N).round(2),
                       "censorship": rng.integers(0, 2, N)})
    for g in GENES:
        df[f"{g}_rnaseq"] = rng.normal(size=N).round(4)
        df[f"{g}_cnv"] = rng.integers(-2, 3, N)
    return df


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    """genomics -> cohort (2 folds) -> snn trained 1 epoch on each fold, and 6 patients
    given again without survival as new patients (their genomics: --missing-survival keep)."""
    root = tmp_path_factory.mktemp("hostile_values")
    pd.DataFrame(FAMILIES).to_csv(root / "fam.csv", index=False)
    table = _table()
    table.to_csv(root / "table.csv", index=False)
    assert main(["genomics", str(root / "table.csv"), "--families", str(root / "fam.csv"),
                 "-o", str(root / "genomics")]) == 0
    assert main(["cohort", str(root / "genomics"), "-o", str(root / "cohort"), "--n-folds", "2"]) == 0
    for k in (0, 1):
        assert main(["train", "--cohort", str(root / "cohort"), "--fold", str(k), "--model", "snn",
                     "-o", str(root / "run" / f"fold_{k}"), "--epochs", "1", "--threads", "1"]) == 0
    table.head(6).drop(columns=["survival_months", "censorship"]).to_csv(root / "new.csv", index=False)
    assert main(["genomics", str(root / "new.csv"), "--families", str(root / "fam.csv"),
                 "-o", str(root / "new_genomics"), "--missing-survival", "keep"]) == 0
    return root


# ---------------------------------------------------------------- building the cases


def _copy(base: Path, tmp: Path, *names: str) -> None:
    for name in names:
        src = base / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / name)


def _genomics(base: Path, tmp: Path, row: int, col: str, value: str) -> tuple[list, list]:
    """`cmta genomics` on the table with one cell replaced; the error names the row."""
    _copy(base, tmp, "fam.csv")
    df = _table().astype({col: object})
    df.loc[row, col] = value
    df.to_csv(tmp / "table.csv", index=False)
    argv = ["genomics", str(tmp / "table.csv"), "--families", str(tmp / "fam.csv"), "-o", str(tmp / "out")]
    return argv, ["table.csv", f"row {row + 2} ({_case(row)})", col]


def _edit_tsv(path: Path, edit) -> None:
    """Read a TSV (gzip by name) as text, ``edit`` the DataFrame, write it back."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    df = edit(df)
    df.to_csv(path, sep="\t", index=False, compression="gzip" if path.suffix == ".gz" else None)


def _set(df: pd.DataFrame, case: str, col: str, value: str) -> pd.DataFrame:
    df.loc[df["case_id"] == case, col] = value
    return df


def _cohort(base, tmp, file, col, value):
    """`cmta cohort` on a genomics folder with one cell of ``file`` replaced."""
    _copy(base, tmp, "genomics")
    case = _case(3)
    _edit_tsv(tmp / "genomics" / file, lambda df: _set(df, case, col, value))
    return (["cohort", str(tmp / "genomics"), "-o", str(tmp / "out"), "--n-folds", "2"],
            [file, f"case_id {case}", col])


def _train(base, tmp, edit):
    """`cmta train` on a cohort folder changed by ``edit(cohort_dir) -> culprits``."""
    _copy(base, tmp, "cohort")
    culprits = edit(tmp / "cohort")
    return (["train", "--cohort", str(tmp / "cohort"), "--fold", "0", "--model", "snn",
             "-o", str(tmp / "out"), "--epochs", "1", "--threads", "1"], culprits)


def _predict(base, tmp, edit, *extra):
    """`cmta predict` on copies of the run, cohort and new genomics changed by
    ``edit(tmp) -> culprits``."""
    _copy(base, tmp, "run", "cohort", "new_genomics")
    culprits = edit(tmp)
    return (["predict", "--run-dir", str(tmp / "run"), "--cohort", str(tmp / "cohort"),
             "--genomics", str(tmp / "new_genomics"), "-o", str(tmp / "out" / "risk.tsv"), *extra], culprits)


def _cbioportal(base, tmp, file, edit, culprits):
    """`cmta genomics --cbioportal` on a copy of a real study folder with ``file`` edited."""
    shutil.copytree(SPEC, tmp / "study")
    path = tmp / "study" / file
    path.write_text(edit(path.read_text()))
    (tmp / "fams.csv").write_text("F1,F2\nTP53,KRAS\nPTEN,AR\n")
    return (["genomics", "--families", str(tmp / "fams.csv"), "-o", str(tmp / "out"),
             "--cbioportal", str(tmp / "study")], culprits)


def _h5_without(path: Path, drop: str | None = None, nan_in: str | None = None) -> None:
    """Rewrite an HDF5 file without dataset ``drop``, or with a NaN in ``nan_in``."""
    with h5py.File(path, "r") as src:
        items = {k: (src[k][()], dict(src[k].attrs)) for k in src}
    with h5py.File(path, "w") as dst:
        for k, (v, attrs) in items.items():
            if k == drop:
                continue
            if k == nan_in:
                v = v.copy()
                v[2, 1] = np.nan
            ds = dst.create_dataset(k, data=v)
            ds.attrs.update(attrs)


def _checkpoint(tmp, change):
    """fold_1's model.pt changed by ``change(ckpt) -> culprits``."""
    path = tmp / "run" / "fold_1" / "model.pt"
    ckpt = torch.load(path, weights_only=True)
    culprits = change(ckpt)
    torch.save(ckpt, path)
    return ["fold_1/model.pt", *culprits]


def _nan_weight(ckpt):
    name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][name].view(-1)[0] = float("nan")
    return [f"tensor {name!r}", "NaN"]


def _model_name(ckpt):
    ckpt["model"]["name"] = "no_such_model"
    return ["'no_such_model'"]


def _wrong_shape(ckpt):
    from cmta_pipeline.models import build_model

    ckpt["state_dict"] = build_model("snn", [s + 1 for s in ckpt["model"]["omic_sizes"]]).state_dict()
    return ["do not fit model 'snn'", "size mismatch"]


class Payload:
    """What a hostile pickle carries: a call, which weights_only loading refuses."""

    def __reduce__(self):
        return (print, ("this must never run",))


def _pickled(ckpt):
    ckpt["extra"] = Payload()
    return ["not a plain state dict; refusing to unpickle", "print"]


def _fold_json(text):
    def edit(c):
        (c / "folds/fold_0/fold.json").write_text(text)
        return ["fold_0/fold.json"]
    return edit


def _write(rel, text, culprits):
    def edit(root):
        (root / rel).write_text(text)
        return culprits
    return edit


def _matrix_cell(col, value):
    def edit(t):
        _edit_tsv(t / "new_genomics/matrix.tsv.gz", lambda df: _set(df, _case(2), col, value))
        return ["new_genomics/matrix.tsv.gz", f"case_id {_case(2)}", col]
    return edit


def _duplicated_patient(t):
    _edit_tsv(t / "new_genomics/matrix.tsv.gz", lambda df: pd.concat([df, df.iloc[[1]]]))
    return ["matrix.tsv.gz", _case(1), "twice"]


def _risk_cell(value):
    def edit(t):
        _edit_tsv(t / "run/fold_0/predictions.tsv", lambda df: df.assign(risk=[value] + list(df["risk"][1:])))
        return ["fold_0/predictions.tsv", "row 2", "'risk'"]
    return edit


def _yaml_tag(base, tmp):
    from _feature_helpers import write_tiled_tiff

    slide = write_tiled_tiff(tmp / "s1.tiff", shape=(512, 512))
    (tmp / "tiling.yaml").write_text("tiling:\n  patch_size_px: !!python/object/apply:os.system ['echo pwned']\n")
    return (["tile", str(slide), "-o", str(tmp / "out"), "--settings", str(tmp / "tiling.yaml")],
            ["tiling.yaml", "line 2", "not plain YAML"])


def _extract(tmp, weights: Path, *extra):
    from _feature_helpers import write_grid_coords, write_tiled_tiff

    slide = write_tiled_tiff(tmp / "small.tiff", shape=(512, 512))
    coords = write_grid_coords(slide, tmp / "small.coords.h5", n=2)
    return ["extract", str(slide), str(coords), "-o", str(tmp / "out"), "--weights", str(weights),
            "--device", "cpu", "--workers", "0", "--threads", "1", "--input-px", "64", *extra]


def _weights_hash(base, tmp):
    torch.save({"conv1.weight": torch.zeros(1)}, tmp / "w.pth")
    return _extract(tmp, tmp / "w.pth", "--weights-sha256", "ab" * 32), ["w.pth", "sha256", "ab" * 32]


def _weights_pickle(base, tmp):
    torch.save({"conv1.weight": Payload()}, tmp / "evil.pth")
    return _extract(tmp, tmp / "evil.pth"), ["evil.pth", "not a plain state dict; refusing to unpickle"]


def _omics_h5(**kw):
    def edit(c):
        _h5_without(c / "folds/fold_0/omics.h5", **kw)
        return ["fold_0/omics.h5", repr(kw.get("drop") or kw.get("nan_in"))]
    return edit


def _fold_months(value):
    def edit(c):
        _edit_tsv(c / "folds/fold_0/patients.tsv", lambda df: _set(df, _case(5), "survival_months", value))
        return ["fold_0/patients.tsv", f"case_id {_case(5)}", "'survival_months'"]
    return edit


def _no_omics(c):
    (c / "folds/fold_0/omics.h5").unlink()
    return ["fold_0/omics.h5", "missing"]


CASES = {
    # cmta genomics: the published wide table, every gene column and the survival columns
    "gene inf": lambda b, t: _genomics(b, t, 4, "TP53_rnaseq", "inf"),
    "gene -inf": lambda b, t: _genomics(b, t, 7, "KRAS_cnv", "-inf"),
    "gene Infinity": lambda b, t: _genomics(b, t, 0, "MYC_rnaseq", "Infinity"),
    "gene 1e30": lambda b, t: _genomics(b, t, 11, "PTEN_rnaseq", "1e30"),
    "gene -1e300": lambda b, t: _genomics(b, t, 39, "BRCA1_cnv", "-1e300"),
    "gene text": lambda b, t: _genomics(b, t, 5, "EGFR_rnaseq", "high"),
    "months inf": lambda b, t: _genomics(b, t, 3, "survival_months", "inf"),
    "months 1e30": lambda b, t: _genomics(b, t, 9, "survival_months", "1e30"),
    "months 5000": lambda b, t: _genomics(b, t, 2, "survival_months", "5000"),
    "censorship inf": lambda b, t: _genomics(b, t, 6, "censorship", "inf"),
    # cmta genomics: a real cBioPortal study folder
    "cbioportal OS_MONTHS inf": lambda b, t: _cbioportal(
        b, t, "data_clinical_patient.txt", lambda s: s.replace("14.2", "inf"),
        ["data_clinical_patient.txt", "P-9000001", "survival_months"]),
    "cbioportal OS_MONTHS 99999": lambda b, t: _cbioportal(
        b, t, "data_clinical_patient.txt", lambda s: s.replace("30.5", "99999"),
        ["data_clinical_patient.txt", "P-9000002", "99999"]),
    "cbioportal CNA inf": lambda b, t: _cbioportal(
        b, t, "data_CNA.txt", lambda s: s.replace("TP53\t-2", "TP53\tinf"),
        ["data_CNA.txt", "gene TP53", "P-9000001-T01-IM6"]),
    # cmta cohort: a genomics folder edited by hand or from elsewhere
    "cohort matrix inf": lambda b, t: _cohort(b, t, "matrix.tsv.gz", "TP53_rnaseq", "inf"),
    "cohort matrix 1e30": lambda b, t: _cohort(b, t, "matrix.tsv.gz", "MYC_cnv", "1e30"),
    "cohort matrix text": lambda b, t: _cohort(b, t, "matrix.tsv.gz", "EGFR_rnaseq", "n/a?"),
    "cohort months inf": lambda b, t: _cohort(b, t, "patients.tsv", "survival_months", "inf"),
    "cohort months 1e30": lambda b, t: _cohort(b, t, "patients.tsv", "survival_months", "1e30"),
    # cmta train: a damaged cohort folder
    "train no omics.h5": lambda b, t: _train(b, t, _no_omics),
    "train fold.json not json": lambda b, t: _train(b, t, _fold_json("{bin_edges: [")),
    "train fold.json no bin_edges": lambda b, t: _train(b, t, _fold_json("{}")),
    "train omics.h5 no case_id": lambda b, t: _train(b, t, _omics_h5(drop="case_id")),
    "train omics.h5 NaN": lambda b, t: _train(b, t, _omics_h5(nan_in="omic_0")),
    "train fold patients months inf": lambda b, t: _train(b, t, _fold_months("inf")),
    "train fold patients months 1e30": lambda b, t: _train(b, t, _fold_months("1e30")),
    "train folds.json []": lambda b, t: _train(b, t, _write("folds.json", "[]", ["folds.json", "mapping"])),
    # cmta predict
    "predict folds.json []": lambda b, t: _predict(b, t, _write("cohort/folds.json", "[]", ["folds.json", "mapping"])),
    "predict empty predictions.tsv": lambda b, t: _predict(
        b, t, _write("run/fold_0/predictions.tsv", "", ["fold_0/predictions.tsv", "not a readable"])),
    "predict NaN reference risk": lambda b, t: _predict(b, t, _risk_cell("nan")),
    "predict matrix text": lambda b, t: _predict(b, t, _matrix_cell("TP53_rnaseq", "abc")),
    "predict matrix inf": lambda b, t: _predict(b, t, _matrix_cell("KRAS_cnv", "inf")),
    "predict duplicated patient": lambda b, t: _predict(b, t, _duplicated_patient),
    "predict --cases twice": lambda b, t: _predict(
        b, t, lambda _: ["--cases", _case(1), "twice"], "--cases", f"{_case(1)},{_case(0)},{_case(1)}"),
    "predict NaN weights": lambda b, t: _predict(b, t, lambda x: _checkpoint(x, _nan_weight)),
    "predict model name": lambda b, t: _predict(b, t, lambda x: _checkpoint(x, _model_name)),
    "predict wrong shape": lambda b, t: _predict(b, t, lambda x: _checkpoint(x, _wrong_shape)),
    "predict unsafe pickle": lambda b, t: _predict(b, t, lambda x: _checkpoint(x, _pickled)),
    # cmta tile and cmta extract
    "tile settings yaml tag": _yaml_tag,
    "extract weights sha256": _weights_hash,
    "extract unsafe pickle": _weights_pickle,
}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_value_is_one_line_naming_the_culprit(name, base, tmp_path, capsys):
    """Exit status 2, one line ``cmta <command>: error: ...`` naming the culprit (file,
    column, row), no traceback nor torch's advice, and not a file written, removed or
    changed (the inputs, a file the user keeps in the output folder)."""
    argv, culprits = CASES[name](base, tmp_path)
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "notes.txt").write_text("the user's own file\n")
    before = _snapshot(tmp_path)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if " ERROR " not in ln and " WARNING " not in ln and " INFO " not in ln]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"cmta {argv[0]}: error: "), err
    for c in culprits:
        assert c in lines[0], (c, lines[0])
    assert "Traceback" not in err and "weights_only=False" not in err
    assert _snapshot(tmp_path) == before


def test_clean_inputs_pass(base, tmp_path, capsys):
    """The negative control of CASES: the same commands on the inputs as they were."""
    argv, _ = _genomics(base, tmp_path, 4, "TP53_rnaseq", "0.5")
    assert main(argv) == 0
    argv, _ = _cohort(base, tmp_path, "patients.tsv", "survival_months", "1199")
    assert main(argv) == 0
    shutil.rmtree(tmp_path / "out")
    argv, _ = _predict(base, tmp_path, lambda _: [])
    assert main(argv) == 0
    risk = pd.read_csv(tmp_path / "out" / "risk.tsv", sep="\t")
    assert len(risk) == 6 and np.isfinite(risk["risk"]).all() and set(risk["risk_group"]) <= {"high", "low"}
    argv, _ = _train(base, tmp_path / "out", lambda c: [])
    assert main(argv) == 0
    summary = json.loads((tmp_path / "out" / "out" / "summary.json").read_text())
    assert summary["metrics"]["heldout_cindex"] is not None


def test_missing_survival_stays_an_audited_drop(base, tmp_path):
    """An empty follow-up is a documented choice (missing_survival: drop), not an error."""
    argv, _ = _genomics(base, tmp_path, 8, "survival_months", "")
    assert main(argv) == 0
    dropped = pd.read_csv(tmp_path / "out" / "dropped.tsv", sep="\t")
    assert dropped["case_id"].tolist() == [_case(8)]


def test_training_refuses_nan_weights_and_risks():
    """`cmta train` checks what it would write: NaN weights or risks are an error, so it
    never exits 0 with a NaN c-index; finite ones pass (the same check)."""
    from types import SimpleNamespace

    from cmta_pipeline.training.fold import _check_result

    ok = SimpleNamespace(state_dict={"w": torch.ones(3)}, predictions=pd.DataFrame(
        {"case_id": ["a", "b"], "set": "heldout", "risk": [0.1, 0.2]}))
    _check_result(ok, Path("model.pt"))
    with pytest.raises(CMTAError, match=r"model.pt: tensor 'w', element \[1\]: value is NaN"):
        _check_result(SimpleNamespace(state_dict={"w": torch.tensor([1.0, float("nan")])},
                                      predictions=ok.predictions), Path("model.pt"))
    with pytest.raises(CMTAError, match="non-finite risk for patient b"):
        _check_result(SimpleNamespace(state_dict=ok.state_dict, predictions=ok.predictions.assign(
            risk=[0.1, float("inf")])), Path("model.pt"))


# ---------------------------------------------------------------- the finite check, as a property

CELL = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.just(float("nan")),
    st.sampled_from([float("inf"), float("-inf"), 1e30, -1e13, 2e12]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(CELL, min_size=3, max_size=3), min_size=1, max_size=6), st.booleans())
def test_numeric_block_refuses_exactly_the_non_finite_and_absurd(rows, as_text):
    """Any cell infinite or beyond +-GENE_VALUE_LIMIT is refused, naming the first such
    cell's row and column (row-major order); anything else, NaN included (missing), passes."""
    df = pd.DataFrame(rows, columns=["A_rnaseq", "B_cnv", "C_mut"])
    if as_text:  # as a reader gets it from a file
        df = df.map(lambda v: "" if np.isnan(v) else repr(v))
    names = [f"row {i + 2}" for i in range(len(rows))]
    arr = np.array(rows, dtype=float)
    bad = np.isinf(arr) | (np.abs(np.nan_to_num(arr)) > GENE_VALUE_LIMIT)
    if not bad.any():
        out = numeric_block(df, "t.tsv", names)
        np.testing.assert_array_equal(out.to_numpy(), arr)
        return
    r, c = np.argwhere(bad)[0]
    with pytest.raises(CMTAError) as exc:
        numeric_block(df, "t.tsv", names)
    assert str(exc.value).startswith(f"t.tsv: row {r + 2}, column {df.columns[c]!r}: value ")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.floats(min_value=0.01, max_value=MAX_SURVIVAL_MONTHS),
                          st.sampled_from([float("inf"), 1e30, MAX_SURVIVAL_MONTHS + 0.01])),
                min_size=1, max_size=8))
def test_survival_months_refused_beyond_the_bound(months):
    from cmta_pipeline.genomics.survival import check_survival

    surv = pd.DataFrame({"survival_months": months, "censorship": 1},
                        index=[f"P{i}" for i in range(len(months))])
    bad = [i for i, m in enumerate(months) if not m <= MAX_SURVIVAL_MONTHS]
    if not bad:
        kept, dropped = check_survival(surv, "clin.tsv", "patient")
        assert len(kept) == len(months) and not dropped
        return
    with pytest.raises(CMTAError, match=rf"clin.tsv: patient P{bad[0]}: survival_months "):
        check_survival(surv, "clin.tsv", "patient")


# ---------------------------------------------------------------- resume files


def test_corrupt_partial_features_are_discarded_and_redone(tmp_path, monkeypatch, caplog):
    """A killed extraction's partial rows, zeroed afterwards (a crash before the page cache
    reached the disk): the rerun finds their checksum wrong, warns, encodes the slide again
    and writes what a clean run writes. The untouched partial (negative control) resumes."""
    from _feature_helpers import write_grid_coords, write_tiled_tiff

    from cmta_pipeline.features import ExtractOptions, build_encoder, extract_slide, sinks

    model, info = build_encoder("random")
    slide = write_tiled_tiff(tmp_path / "small.tiff", shape=(1024, 1280))
    coords = write_grid_coords(slide, tmp_path / "small.coords.h5")  # 20 patches
    opts = ExtractOptions(weights="random", device="cpu", batch_size=4, workers=0, precision="fp32",
                          threads=1, progress=False, input_px=64)
    whole = extract_slide(slide, coords, tmp_path / "whole", opts, model=model, info=info)
    clean = [(tmp_path / "whole" / f"small{e}").read_bytes() for e in (".features.h5", ".pt")]

    def killed_after_8(out):
        real = sinks.PartialFeatures.append

        def dying(self, feats, failed):
            real(self, feats, failed)
            if self.rows == 8:
                raise KeyboardInterrupt

        monkeypatch.setattr(sinks.PartialFeatures, "append", dying)
        with pytest.raises(KeyboardInterrupt):
            extract_slide(slide, coords, out, opts, model=model, info=info)
        monkeypatch.setattr(sinks.PartialFeatures, "append", real)
        return out / ".small.features.partial"

    partial = killed_after_8(tmp_path / "ok")
    record = json.loads(partial.with_name(partial.name + ".json").read_text())
    assert [c[0] for c in record["chunks"]] == [4, 8] and all(len(c[1]) == 64 for c in record["chunks"])
    assert extract_slide(slide, coords, tmp_path / "ok", opts, model=model, info=info).stats["resumed_rows"] == 8

    partial = killed_after_8(tmp_path / "zeroed")
    data = bytearray(partial.read_bytes())
    data[5 * 4096:7 * 4096] = bytes(2 * 4096)  # rows 5 and 6 zeroed; size and count unchanged
    partial.write_bytes(bytes(data))
    caplog.clear()
    res = extract_slide(slide, coords, tmp_path / "zeroed", opts, model=model, info=info)
    assert res.stats["resumed_rows"] == 0
    assert "partial features fail their checksum (rows 4..7 changed)" in caplog.text
    assert [(tmp_path / "zeroed" / f"small{e}").read_bytes() for e in (".features.h5", ".pt")] == clean
    assert not partial.exists() and whole.n_patches == 20


# ---------------------------------------------------------------- weights


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A stood-in torch hub cache (TORCH_HOME in tmp_path): nothing is downloaded here."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch" / "hub"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    yield tmp_path / "torch" / "hub" / "checkpoints"
    torch.hub.set_dir(old)


def _resnet_state(seed=0):
    from cmta_pipeline.features.encoder import ResNet50Trunc

    torch.manual_seed(seed)
    return ResNet50Trunc().state_dict()


def test_random_weights_under_the_imagenet_name_are_refused(hub, tmp_path):
    """torchvision's file name carries 8 hex digits of the hash, and torch hub checks them
    only when it downloads: a cached file is hashed in full, by `--weights imagenet` and by
    fetch-weights, and nothing is written."""
    from cmta_pipeline.features.encoder import (
        IMAGENET_FILE,
        IMAGENET_SHA256,
        build_encoder,
        fetch_imagenet_weights,
    )

    torch.save(_resnet_state(), hub / IMAGENET_FILE)
    with pytest.raises(CMTAError, match=rf"{IMAGENET_FILE}: sha256 [0-9a-f]{{64}} is not {IMAGENET_SHA256}"):
        build_encoder("imagenet")
    out = tmp_path / "resources" / IMAGENET_FILE
    with pytest.raises(CMTAError, match=f"{IMAGENET_FILE}: sha256 .* is not {IMAGENET_SHA256}"):
        fetch_imagenet_weights(out)
    assert not out.exists() and not out.parent.exists() or not any(out.parent.iterdir())
    assert (hub / IMAGENET_FILE).is_file()  # not ours to delete


def test_fetch_weights_writes_the_downloaded_bytes(hub, tmp_path):
    """The saved file is the downloaded one, byte for byte (so the workflow's
    ensure(sha256=...) can pass), from a mirror or the hub cache; a wrong hash writes nothing."""
    from cmta_pipeline.features.encoder import fetch_imagenet_weights, sha256_file

    src = tmp_path / "src.pth"
    torch.save(_resnet_state(1), src)
    sha = sha256_file(src)
    mirror = tmp_path / "mirror" / f"resnet50-{sha[:8]}.pth"
    mirror.parent.mkdir()
    src.rename(mirror)
    out = tmp_path / "w" / "a.pth"
    fetch_imagenet_weights(out, url=mirror.as_uri())
    assert sha256_file(out) == sha
    fetch_imagenet_weights(tmp_path / "w" / "b.pth", url=mirror.as_uri(), sha256=sha)
    assert sha256_file(tmp_path / "w" / "b.pth") == sha
    with pytest.raises(CMTAError, match=f"sha256 {sha} is not {'0' * 64}"):
        fetch_imagenet_weights(tmp_path / "w" / "c.pth", url=mirror.as_uri(), sha256="0" * 64)
    wrong = tmp_path / "mirror" / "resnet50-deadbeef.pth"
    wrong.write_bytes(mirror.read_bytes())
    with pytest.raises(CMTAError, match="does not start with the hash in its name"):
        fetch_imagenet_weights(tmp_path / "w" / "d.pth", url=wrong.as_uri())
    # a file already in the hub cache is copied, not downloaded, once its hash is checked
    (hub / mirror.name).write_bytes(mirror.read_bytes())
    mirror.unlink()
    fetch_imagenet_weights(tmp_path / "w" / "e.pth", url=mirror.as_uri(), sha256=sha)
    assert sha256_file(tmp_path / "w" / "e.pth") == sha
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["a.pth", "b.pth", "e.pth"]


def test_configured_weights_sha256(tmp_path):
    """features.weights_sha256 / --weights-sha256: the local file's hash must match."""
    from cmta_pipeline.features.encoder import check_weights_sha256, sha256_file

    path = tmp_path / "w.pth"
    torch.save(_resnet_state(), path)
    check_weights_sha256(str(path), sha256_file(path).upper())  # the right hash passes
    with pytest.raises(CMTAError, match="w.pth: sha256 .* is not 0{64}"):
        check_weights_sha256(str(path), "0" * 64)
    with pytest.raises(CMTAError, match="'xyz' is not a sha256"):
        check_weights_sha256(str(path), "xyz")
    with pytest.raises(CMTAError, match="checks a local weights file"):
        check_weights_sha256("random", "0" * 64)
