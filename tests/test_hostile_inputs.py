"""Hostile and careless inputs (issue 27, items 1-4): ids at every door, no value that
reaches a shell unquoted, a command that touches only what it owns, one writer per output.

One table, :data:`CASES`: each case builds its inputs in a fresh folder (beside a
``results/`` holding files of the user's own), runs a ``cmta`` command (in this process) or
a Snakemake dry run, and checks the exit status, that the one-line message names the
culprit (the file and line or the option, the id's ``repr`` and the character), and that
nothing was lost or changed: the whole folder is snapshot (every path and its bytes)
before and after. The controls (``ok_...``) go through the same code paths with odd but
valid ids and must pass. docs/security.md says what is checked where.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmta_pipeline.cli import main
from cmta_pipeline.fileio import fresh_outputs, output_lock
from cmta_pipeline.ids import MAX_LENGTH, check_id, id_problem, is_valid_id

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
ZWSP = "a\u200bb"

# ---------------------------------------------------------------- the tree and the inputs


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its bytes ("dir" for a folder)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def _user_files(root: Path) -> None:
    """What a user keeps beside the outputs: none of it may be touched."""
    for rel in ("results/keep.txt", "results/notes/plan.md", "results/tiles/A.coords.h5",
                "results/tiles/A.qc.png", "results/features/A.features.h5", "results/features/A.pt",
                "keep/mine.txt", "results/predict/old_risk.tsv"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"the user's {rel}\n")


def _sheet(root: Path, slide_id="TCGA-AA-0002-01Z-00-DX1", case_id="TCGA-AA-0002") -> Path:
    p = root / "slides.tsv"
    p.write_text("slide_id\tcase_id\tpath\n"
                 "TCGA-AA-0001-01Z-00-DX1\tTCGA-AA-0001\tslides/a.svs\n"
                 f"{slide_id}\t{case_id}\tslides/b.svs\n")
    return p


def _manifest(root: Path, name: str) -> Path:
    """A GDC manifest and its download: <File ID>/<name> of 10 bytes."""
    uid = "d65c5d21-6333-4a9e-9a2a-139a122a3c8a"
    (root / "dl" / uid).mkdir(parents=True)
    (root / "dl" / uid / name).write_bytes(b"0123456789")
    p = root / "gdc_manifest.txt"
    p.write_text(f"id\tfilename\tmd5\tsize\tstate\n{uid}\t{name}\t4e9750d2fd3ce0704429cb413feeed12\t10\treleased\n")
    return p


def _gdc_sample_sheet(root: Path, case_id: str) -> Path:
    """Two rows of the real COAD slide sample sheet (tests/data), downloaded as empty files;
    the second row's Case ID replaced by ``case_id``."""
    lines = (DATA / "gdc/sample_sheets/gdc_sample_sheet_tcga_coad_slides_2026.tsv").read_text().splitlines()[:3]
    for line in lines[1:]:
        fid, name = line.split("\t")[:2]
        (root / "dl" / fid).mkdir(parents=True)
        (root / "dl" / fid / name).write_bytes(b"x")
    lines[2] = lines[2].replace("\tTCGA-AA-3939\t", f"\t{case_id}\t")
    p = root / "gdc_sample_sheet.tsv"
    p.write_text("\n".join(lines) + "\n")
    return p


def _families(root: Path) -> Path:
    p = root / "families.csv"
    p.write_text("F1,F2\nTP53,KRAS\n")
    return p


def _wide_table(root: Path, case_id="TCGA-AA-0003") -> Path:
    rows = ["case_id,survival_months,censorship,TP53_rnaseq,KRAS_cnv"]
    for i, c in enumerate(["TCGA-AA-0001", "TCGA-AA-0002", case_id, "TCGA-AA-0004"]):
        rows.append(f"{c},{10 + i},{i % 2},{i}.5,{i - 1}")
    p = root / "table.csv"
    p.write_text("\n".join(rows) + "\n")
    return p


def _cbio_patients(root: Path, patient: str) -> Path:
    p = root / "data_clinical_patient.txt"
    p.write_text("#Patient Identifier\tOverall Survival (Months)\tOverall Survival Status\n"
                 "#STRING\tNUMBER\tSTRING\n"
                 "PATIENT_ID\tOS_MONTHS\tOS_STATUS\n"
                 "TCGA-AA-0001\t10.5\t1:DECEASED\n"
                 f"{patient}\t20\t0:LIVING\n")
    return p


def _coords(root: Path, attr: str | None) -> Path:
    p = root / "coords.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("coords", data=np.zeros((2, 2), np.int64))
        if attr is not None:
            f.attrs["slide_id"] = attr
            d.attrs["slide_id"] = attr
    return p


@pytest.fixture(scope="session")
def genomics_dir(tmp_path_factory) -> Path:
    """One `cmta genomics` folder of 12 patients, shared by the cohort cases (copied)."""
    root = tmp_path_factory.mktemp("hostile_genomics")
    rows = ["case_id,survival_months,censorship,TP53_rnaseq,KRAS_cnv"]
    rng = np.random.default_rng(0)
    for i in range(12):
        rows.append(f"TCGA-AA-{i:04d},{5 + 3 * i},{i % 3 == 0:d},{rng.normal():.3f},{rng.normal():.3f}")
    (root / "t.csv").write_text("\n".join(rows) + "\n")
    assert main(["genomics", str(root / "t.csv"), "--families", str(_families(root)), "-o", str(root / "g")]) == 0
    return root / "g"


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory) -> Path:
    from cmta_pipeline.slides.synthetic import demo_specimen, write_synthetic_slide

    shapes, w, h = demo_specimen()
    p = tmp_path_factory.mktemp("hostile_slide") / "TCGA-AA-0009-01Z-00-DX1.tif"
    write_synthetic_slide(p, shapes[:1], w, h, 0.5)
    return p


# ---------------------------------------------------------------- the cases


@dataclass
class Case:
    name: str
    build: Callable  # (root, fixtures) -> argv of cmta, or ("snakemake", argv)
    rc: int
    needles: tuple = ()
    changes: str | None = None  # a path (relative to root) under which a passing run may write


HOSTILE_IDS = [  # (case name, id, what the message must show)
    ("semicolon", "a;id>P1", "';' (U+003B"),
    ("command_substitution", "$(id>P2)", "'$' (U+0024"),
    ("backticks", "`id>P4`", "'`' (U+0060"),
    ("quotes", "q'x\"", "\"'\" (U+0027"),
    ("dotdot", "..", "starts with '.'"),
    ("dot", ".", "starts with '.'"),
    ("star", "*", "'*' (U+002A"),
    ("traversal", "../../x", "'/' (U+002F"),
    ("braces", "{IFS}", "'{' (U+007B"),
    ("option", "-rf", "starts with '-'"),
    ("zero_width_space", ZWSP, "U+200B ZERO WIDTH SPACE"),
    ("space", "a b", "' ' (U+0020"),
    ("backslash", "a\\b", "U+005C"),
    ("pipe", "a|b", "'|' (U+007C"),
    ("ampersand", "a&b", "'&' (U+0026"),
    ("redirect", "a<b", "'<' (U+003C"),
    ("question_mark", "a?", "'?' (U+003F"),
    ("brackets", "[ab]", "'[' (U+005B"),
    ("tilde", "~root", "'~' (U+007E"),
    ("hidden", ".hidden", "starts with '.'"),
    ("non_ascii", "caf\u00e9", "U+00E9"),
    ("bidi_override", "a\u202eb", "U+202E"),
    ("dollar_brace", "${HOME}", "'$' (U+0024"),
    ("too_long", "a" * (MAX_LENGTH + 1), f"at most {MAX_LENGTH}"),
]

CASES: list[Case] = []

# cmta slides --sheet: the slide_id of line 3
for _n, _id, _why in HOSTILE_IDS:
    CASES.append(Case(f"slides_sheet_slide_id_{_n}", lambda r, fx, i=_id: ["slides", "--sheet", str(_sheet(r, i))],
                      2, ("slides.tsv, line 3", repr(_id)[:60], _why)))
# cmta slides --sheet: the case_id of line 3
for _n, _id, _why in [HOSTILE_IDS[i] for i in (0, 1, 4, 10)]:
    CASES.append(Case(f"slides_sheet_case_id_{_n}", lambda r, fx, i=_id: ["slides", "--sheet", str(_sheet(r, case_id=i))],
                      2, ("slides.tsv, line 3", "case_id", repr(_id), _why)))
CASES.append(Case("ok_slides_sheet_odd_valid_ids", lambda r, fx: [
    "slides", "--sheet", str(_sheet(r, "TCGA-AZ-4313-01Z-00-DX1.5e7ecf69-d1fd-4997-9dcc-ab8e9f10b423", "_x.y-9")),
    "-o", str(r / "results/sheet.tsv")], 0, changes="results/sheet.tsv"))

# cmta slides --folder --gdc-manifest: a GDC file name that makes a hostile slide id
for _n, _name, _why in [("semicolon", "TCGA-AA-0001-01Z-00-DX1;id>P1.svs", "';'"),
                        ("command_substitution", "TCGA-AA-0001-01Z-00-DX1$(id>P2).svs", "'$'"),
                        ("backticks", "TCGA-AA-0001-01Z-00-DX1`id>P4`.svs", "'`'"),
                        ("quote", "TCGA-AA-0001-01Z-00-DX1'x.svs", "\"'\""),
                        ("zero_width_space", "TCGA-AA-0001-01Z-00-DX1\u200b.svs", "U+200B"),
                        ("space", "TCGA-AA-0001-01Z-00-DX1 x.svs", "' '")]:
    CASES.append(Case(f"slides_gdc_manifest_{_n}", lambda r, fx, n=_name: [
        "slides", "--folder", str(r / "dl"), "--gdc-manifest", str(_manifest(r, n))],
        2, ("gdc_manifest.txt, row 2", "slide id (the file name)", _why)))
CASES.append(Case("ok_slides_gdc_manifest_real_name", lambda r, fx: [
    "slides", "--folder", str(r / "dl"), "--gdc-manifest",
    str(_manifest(r, "TCGA-AZ-4313-01Z-00-DX1.5e7ecf69-d1fd-4997-9dcc-ab8e9f10b423.svs"))], 0))
# cmta slides --folder --gdc-sample-sheet: a hostile Case ID
for _n, _case, _why in [("semicolon", "TCGA-AA-3939;id>P1", "';'"), ("zero_width_space", "TCGA-AA-3939\u200b", "U+200B")]:
    CASES.append(Case(f"slides_gdc_sample_sheet_case_{_n}", lambda r, fx, c=_case: [
        "slides", "--folder", str(r / "dl"), "--gdc-sample-sheet", str(_gdc_sample_sheet(r, c))],
        2, ("gdc_sample_sheet.tsv, row", "case id", _why)))
CASES.append(Case("ok_slides_gdc_sample_sheet_real", lambda r, fx: [
    "slides", "--folder", str(r / "dl"), "--gdc-sample-sheet", str(_gdc_sample_sheet(r, "TCGA-AA-3939"))], 0))

# cmta tile: --slide-id, --case-id, the file name, --mpp, the settings
_TILE = ["--preset", "biopsy", "--allow-upsampling"]
for _n, _id, _why in [HOSTILE_IDS[i] for i in (0, 1, 4, 5, 6, 7, 9, 10)]:
    CASES.append(Case(f"tile_slide_id_{_n}", lambda r, fx, i=_id: [
        "tile", str(fx["slide"]), "-o", str(r / "results/tiles"), f"--slide-id={i}", *_TILE],
        2, ("--slide-id", repr(_id), _why)))
for _n, _id, _why in [HOSTILE_IDS[i] for i in (0, 1)]:
    CASES.append(Case(f"tile_case_id_{_n}", lambda r, fx, i=_id: [
        "tile", str(fx["slide"]), "-o", str(r / "results/tiles"), f"--case-id={i}", *_TILE],
        2, ("--case-id", repr(_id), _why)))


def _renamed_slide(r, fx, name):
    (r / "in").mkdir()
    p = r / "in" / name
    p.write_bytes(fx["slide"].read_bytes())
    return ["tile", str(p), "-o", str(r / "results/tiles"), *_TILE]


CASES.append(Case("tile_file_name_semicolon", lambda r, fx: _renamed_slide(r, fx, "x;rm -rf y.tif"),
                  2, ("(its file name)", "';'")))
for _n, _v in [("nan", "nan"), ("inf", "inf"), ("zero", "0"), ("negative", "-1")]:
    CASES.append(Case(f"tile_mpp_{_n}", lambda r, fx, v=_v: [
        "tile", str(fx["slide"]), "-o", str(r / "results/tiles"), f"--mpp={v}", *_TILE],
        2, ("--mpp", "positive finite")))
for _n, _s, _key in [("patch_size_px_zero", '{"patch_size_px": 0}', "tiling.patch_size_px"),
                     ("target_mpp_nan", '{"target_mpp": NaN}', "tiling.target_mpp"),
                     ("encoder_input_px_negative", '{"encoder_input_px": -5}', "tiling.encoder_input_px")]:
    CASES.append(Case(f"tile_settings_{_n}", lambda r, fx, s=_s: [
        "tile", str(fx["slide"]), "-o", str(r / "results/tiles"), "--settings", s],
        2, (_key, "positive finite")))
CASES.append(Case("ok_tile_odd_valid_slide_id", lambda r, fx: [
    "tile", str(fx["slide"]), "-o", str(r / "results/tiles"), "--slide-id=odd.id_1", *_TILE],
    0, changes="results/tiles/odd.id_1"))

# cmta extract: the coords file's slide_id attribute, and --slide-id
for _n, _id, _why in [("traversal", "../../evil", "'/'"), *[HOSTILE_IDS[i] for i in (0, 1, 4, 5, 6, 10)]]:
    CASES.append(Case(f"extract_coords_attribute_{_n}", lambda r, fx, i=_id: [
        "extract", str(r / "missing.svs"), str(_coords(r, i)), "-o", str(r / "results/features"),
        "--weights", "random"], 2, ("coords.h5 (attribute slide_id)", repr(_id), _why)))
for _n, _id, _why in [("star", "*", "'*'"), ("traversal", "../x", "'.'")]:
    CASES.append(Case(f"extract_slide_id_{_n}", lambda r, fx, i=_id: [
        "extract", str(r / "missing.svs"), str(_coords(r, None)), "-o", str(r / "results/features"),
        f"--slide-id={i}", "--weights", "random"], 2, ("--slide-id", repr(_id), _why)))



def _failed_tiling(r):
    p = r / "s.tile.json"
    p.write_text(json.dumps({"status": "failed", "reason": "no tissue"}))
    return str(p)


# the control: a valid attribute names the outputs (a slide whose tiling failed: no encoder)
CASES.append(Case("ok_extract_coords_attribute_valid", lambda r, fx: [
    "extract", str(r / "missing.svs"), str(_coords(r, "x.y_1")), "-o", str(r / "results/features"),
    "--weights", "random", "--tile-status", _failed_tiling(r)], 0, changes="results/features/x.y_1."))

# cmta genomics: case ids of a wide table, a cBioPortal patient table, a GDC clinical table
for _n, _id, _why in [HOSTILE_IDS[i] for i in (0, 1, 4, 6, 9, 10)]:
    CASES.append(Case(f"genomics_wide_table_case_id_{_n}", lambda r, fx, i=_id: [
        "genomics", str(_wide_table(r, i)), "--families", str(_families(r)), "-o", str(r / "results/genomics")],
        2, ("table.csv, line 4", repr(_id), _why)))
for _n, _id, _why in [("semicolon", "TCGA-AA-0002;x", "';'"), ("zero_width_space", "TCGA-AA-0002\u200b", "U+200B")]:
    CASES.append(Case(f"genomics_cbioportal_patient_id_{_n}", lambda r, fx, i=_id: [
        "genomics", "--rnaseq", str(_rna(r)), "--clinical", str(_cbio_patients(r, i)),
        "--families", str(_families(r)), "-o", str(r / "results/genomics")],
        2, ("data_clinical_patient.txt, line 5", "PATIENT_ID", _why)))
CASES.append(Case("ok_genomics_wide_table", lambda r, fx: [
    "genomics", str(_wide_table(r)), "--families", str(_families(r)), "-o", str(r / "results/genomics")],
    0, changes="results/genomics"))


def _rna(root: Path) -> Path:
    p = root / "data_mrna.txt"
    p.write_text("Hugo_Symbol\tEntrez_Gene_Id\tTCGA-AA-0001-01\tTCGA-AA-0002-01\nTP53\t7157\t1.0\t2.0\n"
                 "KRAS\t3845\t4.0\t5.0\n")
    return p


# cmta cohort: a hand-edited patients.tsv, a slide sheet, an output that is a folder, a lock
def _gdir(r, fx, edit=None):
    import shutil

    g = r / "g"
    shutil.copytree(fx["genomics"], g)
    if edit:
        p = g / "patients.tsv"
        p.write_text(p.read_text().replace("TCGA-AA-0004", edit))
    return g


CASES.append(Case("cohort_patients_case_id_semicolon", lambda r, fx: [
    "cohort", str(_gdir(r, fx, "TCGA-AA-0004;x")), "-o", str(r / "results/cohort")],
    2, ("patients.tsv, line", "'TCGA-AA-0004;x'", "';'")))
CASES.append(Case("cohort_slide_sheet_traversal", lambda r, fx: [
    "cohort", str(_gdir(r, fx)), "-o", str(r / "results/cohort"), "--slides", str(_sheet(r, "../../x"))],
    2, ("slides.tsv, line 3", "'../../x'")))


def _folder_as_marker(r, fx, marker, argv):
    (r / marker).mkdir(parents=True)
    (r / marker / "inside.txt").write_text("the user's\n")
    return argv


CASES.append(Case("cohort_folds_json_is_a_folder", lambda r, fx: _folder_as_marker(
    r, fx, "results/cohort/folds.json", ["cohort", str(_gdir(r, fx)), "-o", str(r / "results/cohort")]),
    2, ("folds.json: is an existing folder",)))
CASES.append(Case("ok_cohort", lambda r, fx: [
    "cohort", str(_gdir(r, fx)), "-o", str(r / "results/cohort"), "--n-folds", "2"], 0, changes="results/cohort"))
CASES.append(Case("train_summary_json_is_a_folder", lambda r, fx: _folder_as_marker(
    r, fx, "results/train/fold_0/summary.json",
    ["train", "--cohort", str(r / "nocohort"), "--model", "snn", "--fold", "0", "-o", str(r / "results/train/fold_0")]),
    2, ("summary.json: is an existing folder",)))
CASES.append(Case("genomics_families_tsv_is_a_folder", lambda r, fx: _folder_as_marker(
    r, fx, "results/genomics/families.tsv",
    ["genomics", str(_wide_table(r)), "--families", str(_families(r)), "-o", str(r / "results/genomics")]),
    2, ("families.tsv: is an existing folder",)))

# cmta predict: -o an existing folder, -o keep/*, --cases
_PREDICT = ["predict", "--run-dir", "norun", "--cohort", "nocohort"]
CASES.append(Case("predict_output_is_an_existing_folder", lambda r, fx: [*_PREDICT, "-o", str(r / "results/predict")],
                  2, ("results/predict: is an existing folder",)))
CASES.append(Case("predict_output_star_fails", lambda r, fx: [*_PREDICT, "-o", str(r / "keep/*")], 2, ("norun",)))
CASES.append(Case("predict_cases_semicolon", lambda r, fx: [*_PREDICT, "--cases", "A,a;id>P1", "-o", str(r / "o.tsv")],
                  2, ("--cases", "'a;id>P1'", "';'")))
CASES.append(Case("predict_cases_zero_width_space", lambda r, fx: [*_PREDICT, "--cases", ZWSP, "-o", str(r / "o.tsv")],
                  2, ("--cases", "U+200B")))


# one writer per output: a second run while the first holds the output's lock
def _held(r, fx, folder, marker, argv):
    fx["hold"] = (r / folder, f".{marker}.lock")
    return argv


CASES.append(Case("cohort_while_another_run_writes", lambda r, fx: _held(
    r, fx, "results/cohort", "folds.json", ["cohort", str(_gdir(r, fx)), "-o", str(r / "results/cohort")]),
    2, ("being written by pid", "on host")))
CASES.append(Case("genomics_while_another_run_writes", lambda r, fx: _held(
    r, fx, "results/genomics", "families.tsv",
    ["genomics", str(_wide_table(r)), "--families", str(_families(r)), "-o", str(r / "results/genomics")]),
    2, ("being written by pid", "on host")))
CASES.append(Case("train_while_another_run_writes", lambda r, fx: _held(
    r, fx, "results/train/fold_0", "summary.json",
    ["train", "--cohort", str(r / "nocohort"), "--model", "snn", "--fold", "0", "-o", str(r / "results/train/fold_0")]),
    2, ("being written by pid", "on host")))
CASES.append(Case("tile_while_another_run_writes", lambda r, fx: _held(
    r, fx, "results/tiles", "s.tile.json",
    ["tile", str(fx["slide"]), "-o", str(r / "results/tiles/s"), "--status", str(r / "results/tiles/s.tile.json"),
     *_TILE]), 2, ("being written by pid", "on host")))


# the workflow: a sheet's ids stop a dry run, naming the sheet (results/ and its files stay)
def _workflow(r, fx, slide_id):
    (r / "config").mkdir()
    (r / "config/config.yaml").write_text(json.dumps({"outdir": "results", "slides": {"sheet": "slides.tsv"}}))
    _sheet(r, slide_id)
    return ("snakemake", ["-n", "--directory", str(r)])


for _n, _id, _why in [HOSTILE_IDS[i] for i in (0, 4, 8)]:
    CASES.append(Case(f"workflow_sheet_slide_id_{_n}", lambda r, fx, i=_id: _workflow(r, fx, i),
                      1, ("slides.tsv, line 3", repr(_id), _why)))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, tmp_path, capsys, genomics_dir, small_slide):
    root = tmp_path / "w"
    root.mkdir()
    _user_files(root)
    fx = {"genomics": genomics_dir, "slide": small_slide}
    argv = case.build(root, fx)
    before = snapshot(root)
    holder = None
    if "hold" in fx:  # another run holds the output's lock, as a second process would
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(fx["hold"][0]), fx["hold"][1]],
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(root)
    try:
        if isinstance(argv, tuple):
            r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow/Snakefile"), *argv[1]],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
            rc, err = (1 if r.returncode else 0), r.stdout + r.stderr
        else:
            rc = main(argv)
            err = capsys.readouterr().err.strip()
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    assert rc == case.rc, err[-2000:]
    for needle in case.needles:
        assert needle in err, (needle, err[-2000:])
    if not isinstance(argv, tuple) and rc:
        assert len(err.splitlines()) == 1 or "Traceback" not in err, err  # one line, no traceback
        assert "Traceback" not in err
    after = snapshot(root)
    if holder is not None:  # the holder's lock file is the holder's
        after = {k: v for k, v in after.items() if not k.endswith(".lock")}
        before = {k: v for k, v in before.items() if not k.endswith(".lock")}
    if case.changes is None:
        assert after == before, _diff(before, after)
    else:  # only under the output, and nothing of what was there before lost
        outside = {k: v for k, v in after.items() if not k.startswith(case.changes)}
        assert outside == {k: v for k, v in before.items() if not k.startswith(case.changes)}, _diff(before, after)
        assert any(k.startswith(case.changes) for k in after)


_HOLDER = """
import sys, time
from pathlib import Path
from cmta_pipeline.fileio import output_lock
with output_lock(Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


def _diff(before, after) -> str:
    gone = sorted(set(before) - set(after))
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"lost {gone}, new {new}, changed {changed}"


def test_there_are_enough_cases():
    assert len(CASES) >= 60


# ---------------------------------------------------------------- the identifier rule


REAL_IDS = [  # from the real exports under tests/data
    "TCGA-AZ-4313-01Z-00-DX1.5e7ecf69-d1fd-4997-9dcc-ab8e9f10b423",  # GDC slide file name
    "d65c5d21-6333-4a9e-9a2a-139a122a3c8a",  # GDC UUID
    "TCGA-2J-AAB1", "TARGET-20-PARLXL", "C3L-00081", "P-0000012", "TCGA-AA-3939-01Z",
]


def test_real_sheets_pass():
    """Every id of the real GDC sample sheets and manifests and cBioPortal tables passes."""
    import pandas as pd

    from cmta_pipeline.slides.sheet import slide_id_from_path

    n = 0
    for p in sorted((DATA / "gdc/sample_sheets").iterdir()):
        df = pd.read_csv(p, sep="\t", dtype=str)
        names = df["filename"] if "filename" in df else df["File Name"]
        for col in [c for c in ("id", "File ID", "Case ID") if c in df]:
            for v in df[col].dropna():
                for part in v.split(", "):  # a paired sheet lists two cases in one cell
                    assert check_id(part.strip()), (p, v)
                    n += 1
        for name in names:
            assert check_id(slide_id_from_path(name)), (p, name)
            n += 1
    for p in DATA.glob("cbioportal/**/data_clinical_*.txt"):
        df = pd.read_csv(p, sep="\t", comment="#", dtype=str)
        for col in ("PATIENT_ID", "SAMPLE_ID"):
            for v in df.get(col, pd.Series(dtype=str)).dropna():
                assert check_id(v), (p, v)
                n += 1
    assert n > 100
    for v in REAL_IDS:
        assert is_valid_id(v) and id_problem(v) is None


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=MAX_LENGTH + 20))
def test_the_identifier_rule_is_a_safe_file_name(value):
    """Whatever the text, an id that passes is one safe file name and one shell word, and
    the check and the predicate agree; one that fails says why."""
    ok = is_valid_id(value)
    assert ok == (id_problem(value) is None)
    if ok:
        assert value not in (".", "..") and value[0] not in ".-" and len(value) <= MAX_LENGTH
        assert shlex.split(value) == [value] and shlex.quote(value) == value
        assert Path(value).name == value and not any(ch in value for ch in "*?[]/\\")
        assert value.isascii() and value.isprintable()
    else:
        with pytest.raises(Exception, match="ids become file names"):
            check_id(value, "slide id", "here")


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,60}", fullmatch=True))
def test_every_name_of_the_grammar_passes(value):
    assert is_valid_id(value)


# ---------------------------------------------------------------- ownership and locks


def test_a_name_made_from_data_is_never_a_pattern_nor_outside_the_folder(tmp_path):
    for name in ("a.pt", "b.pt", "c.txt"):
        (tmp_path / name).write_text("x")
    with fresh_outputs(tmp_path, ["*.pt"], marker="[ab].txt"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt", "c.txt"]
    from cmta_pipeline.errors import CMTAError
    from cmta_pipeline.fileio import Glob

    for bad in ("../x", "a/../../x"):
        with pytest.raises(CMTAError, match="not a name inside the output folder"):
            with fresh_outputs(tmp_path / "out", [bad]):
                pass
    with fresh_outputs(tmp_path, [Glob("*.pt")]):  # the negative control: a Glob is a pattern
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_the_lock_is_reentrant_and_removed(tmp_path):
    with output_lock(tmp_path, ".x.lock"):
        with output_lock(tmp_path, ".x.lock"):
            assert (tmp_path / ".x.lock").read_text().startswith(f"pid {os.getpid()} on host")
    assert not (tmp_path / ".x.lock").exists()


def _consistent(out: Path) -> tuple[int, int]:
    """(n_folds, seed) of a finished cohort folder that is whole and one run's."""
    summary = json.loads((out / "folds.json").read_text())
    folds = sorted(p.name for p in (out / "folds").iterdir())
    assert folds == [f"fold_{k}" for k in range(summary["n_folds"])], (summary["n_folds"], folds)
    for k in range(summary["n_folds"]):
        assert (out / "folds" / f"fold_{k}" / "fold.json").is_file()
    return summary["n_folds"], summary["seed"]


def test_two_cohort_runs_into_one_folder_never_leave_a_mix(genomics_dir, tmp_path):
    """5 folds seed 1 and 2 folds seed 2 into one -o at once: one run finishes, the other
    waits its turn or is refused naming the first (pid, host); the folder is one run's."""
    out = tmp_path / "cohort"
    cmd = [sys.executable, "-m", "cmta_pipeline", "cohort", str(genomics_dir), "-o", str(out)]
    for attempt in range(2):
        a = subprocess.Popen([*cmd, "--n-folds", "5", "--seed", "1"], stderr=subprocess.PIPE, text=True)
        time.sleep(0.05 * attempt)
        b = subprocess.Popen([*cmd, "--n-folds", "2", "--seed", "2"], stderr=subprocess.PIPE, text=True)
        results = [(p.wait(timeout=120), p.stderr.read()) for p in (a, b)]
        assert any(rc == 0 for rc, _ in results), results
        for rc, err in results:
            assert rc in (0, 2), err
            if rc == 2:
                assert re.search(r"being written by pid \d+ on host", err), err
        n_folds, seed = _consistent(out)
        assert (n_folds, seed) in ((5, 1), (2, 2))
        assert not list(out.glob(".*.lock"))
    # a negative control through the same check: a mix is seen as one
    (out / "folds" / "fold_7").mkdir()
    with pytest.raises(AssertionError):
        _consistent(out)


# ---------------------------------------------------------------- no value reaches a shell unquoted


#: shell placeholders that are not `:q`: each holds arguments a function already quoted
#: with shlex.quote (args, speed, slides, runs, cmta, encoder), a number, or a schema enum.
PRE_QUOTED = {"params.args", "params.speed", "params.slides", "params.runs", "params.cmta",
              "params.encoder", "threads", "params.on_error", "params.patch_px", "params.input_px",
              "params.batch"}


def test_every_shell_placeholder_is_quoted():
    found = {}
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.findall(r"shell:\n((?:\s+\".*\"\n)+)", text):
            for name, q in re.findall(r"\{([\w.]+)(:q)?\}", block):
                if not q:
                    found.setdefault(name, []).append(smk.name)
    assert found, "the shell commands were not found"
    assert set(found) <= PRE_QUOTED, {k: v for k, v in found.items() if k not in PRE_QUOTED}


def _dry_run_commands(root: Path, config: dict) -> list[str]:
    """The shell commands of a dry run (-n -p) of ``config`` in ``root``."""
    (root / "config").mkdir()
    (root / "config/config.yaml").write_text(json.dumps(config))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow/Snakefile"), "-n", "-p",
                        "--directory", str(root)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line.strip().removeprefix("Shell command: ") for line in r.stdout.splitlines()]
    return [c for c in lines if "-m cmta_pipeline" in c or "sha256sum -c" in c]


def _one_word_each(commands: list[str], whole: dict[str, str]) -> None:
    """Each value is one shell word: a word holding a piece of a value holds all of it."""
    for command in commands:
        for word in shlex.split(command):
            for piece, value in whole.items():
                if piece in word:
                    assert value in word, (word, command)


HOSTILE_OUTDIR = "res q'x $(touch PWNED); y"


@pytest.mark.parametrize("slides_per_job", [1, 2])
def test_hostile_config_values_are_one_shell_word_each(tmp_path, slides_per_job):
    """A dry run (-n -p) with an outdir and input paths holding a quote, a space, $() and ;
    and odd but valid slide ids: every shell command parses, and each value is one word
    (the tile jobs, one slide each or in batches, the tiling summary, the genomics and the
    families' download)."""
    hostile = HOSTILE_OUTDIR
    slides = tmp_path / "sl ides;$(x)"
    slides.mkdir()
    ids = ["TCGA-AA-0001-01Z-00-DX1.5e7ecf69-d1fd-4997-9dcc-ab8e9f10b423", "_odd.id-9", "x.", "a..b"]
    rows = "".join(f"{i}\tTCGA-AA-000{k}\t{slides / (i + '.svs')}\n" for k, i in enumerate(ids))
    (tmp_path / "slides.tsv").write_text("slide_id\tcase_id\tpath\n" + rows)
    table = tmp_path / "gen 'o'; $(mics).csv"
    table.write_text("x")
    commands = _dry_run_commands(tmp_path, {  # the families file downloaded: download_families
        "outdir": f"{tmp_path}/{hostile}", "slides": {"sheet": "slides.tsv"}, "genomics": {"table": str(table)},
        "tiling": {"slides_per_job": slides_per_job}})
    run = {(w := shlex.split(c))[w.index("cmta_pipeline") + 1] for c in commands if "cmta_pipeline" in c}
    assert {"tile", "tile-summary", "genomics"} <= run, commands
    assert len([c for c in commands if "sha256sum -c" in c]) == 1, commands
    families = f"{tmp_path}/{hostile}/resources/signatures.csv"
    _one_word_each(commands, {"PWNED": f"{tmp_path}/{hostile}", "(mics)": str(table),
                              "/resources/signatures": families, "ides;": str(slides)})
    genomics = next(shlex.split(c) for c in commands if " genomics " in c)
    assert str(table) in genomics and str(families) in genomics, genomics
    tile = [shlex.split(c) for c in commands if " tile " in c]
    if slides_per_job == 1:
        for i in ids:
            assert any(["--slide-id", i] == w[k:k + 2] for w in tile for k in range(len(w))), i
    else:  # each slide one --batch word: JSON naming its id and its file
        items = [json.loads(w[k + 1]) for w in tile for k in range(len(w)) if w[k] == "--batch"]
        assert sorted(item["slide_id"] for item in items) == sorted(ids), items
        assert all(item["slide"] == str(slides / f"{item['slide_id']}.svs") for item in items), items
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


def test_hostile_config_values_down_the_genomics_chain(tmp_path):
    """The same down a genomics-only chain: genomics, cohort (--splits), train (a network
    and coxnet), report, table1, and predict with its own genomics."""
    table = tmp_path / "gen 'o'; $(mics).csv"
    table.write_text("x")
    splits = tmp_path / "sp lits;$(x)"
    commands = _dry_run_commands(tmp_path, {
        "outdir": f"{tmp_path}/{HOSTILE_OUTDIR}", "genomics": {"table": str(table), "families": str(table)},
        "cohort": {"n_folds": 2, "with_slides": False, "splits": str(splits)},
        "training": {"models": ["snn", "coxnet"], "folds": [0], "epochs": 1}, "predict": {"genomics": str(table)}})
    run = {(w := shlex.split(c))[w.index("cmta_pipeline") + 1] for c in commands}
    assert {"genomics", "cohort", "train", "report", "table1", "predict"} <= run, commands
    _one_word_each(commands, {"PWNED": f"{tmp_path}/{HOSTILE_OUTDIR}", "(mics)": str(table), "lits;": str(splits)})
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()
