"""protocol: paper sets the authors' evaluation, per study; honest changes nothing."""

from __future__ import annotations

import pytest

from cmta_pipeline.errors import CMTAError
from cmta_pipeline.report.protocol import PAPER_ALPHA, protocol_label, resolve_protocol, study_of


def _config(**top):
    return {"outdir": "r", "genomics": {"table": None},
            "cohort": {"labels_from": "train"},
            "training": {"selection": "final", "alpha": 1.0, "epochs": 30}, **top}


def test_honest_is_the_default_and_changes_nothing():
    for cfg in (_config(), _config(protocol="honest")):
        out, notes = resolve_protocol(cfg)
        assert out == cfg and notes == []
        assert protocol_label(cfg) == "honest"


@pytest.mark.parametrize("study,alpha", [("blca", 1.0), ("brca", 100.0), ("gbmlgg", 1.0),
                                         ("luad", 1e-4), ("ucec", 1.0)])
def test_paper_sets_bins_selection_and_the_run_script_alpha(study, alpha):
    cfg = _config(protocol="paper", study=study)
    out, notes = resolve_protocol(cfg)
    assert out["cohort"]["labels_from"] == "all"
    assert out["genomics"]["drop_last_column"] is True
    assert out["training"]["selection"] == "best_heldout"
    assert out["training"]["alpha"] == alpha
    assert out["training"]["epochs"] == 30  # the rest is left alone
    assert cfg["training"]["selection"] == "final"  # input not modified
    assert notes and all("OPTIMISTIC" in n for n in notes)
    assert "OPTIMISTIC" in protocol_label(cfg)


def test_paper_reads_the_study_from_the_published_table_name_or_says_what_is_missing():
    cfg = _config(protocol="paper")
    cfg["genomics"]["table"] = "/data/tcga_luad_all_clean.csv.zip"
    assert study_of(cfg) == "luad"
    assert resolve_protocol(cfg)[0]["training"]["alpha"] == PAPER_ALPHA["luad"] == 1e-4
    cfg["genomics"]["table"] = "/data/my_cohort.csv"
    with pytest.raises(CMTAError, match="study"):
        resolve_protocol(cfg)
    with pytest.raises(CMTAError, match="protocol"):
        resolve_protocol(_config(protocol="published"))
