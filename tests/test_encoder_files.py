"""Features users already have (TRIDENT's and CLAM's folders) read with their encoder and
width checked; `cmta predict` refuses features of another encoder than the checkpoint's."""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from cmta_pipeline.errors import CMTAError
from cmta_pipeline.features.files import (
    check_encoder,
    feature_file_encoder,
    features_encoder,
    find_feature_file,
    load_bag,
    load_features,
)


def trident_file(path, n, dim, encoder=None):
    """TRIDENT's layout: ``features`` (N x D) with the encoder among its attributes,
    ``coords`` (N x 2) with the patching's attributes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("features", data=np.random.default_rng(0).random((n, dim),
                                                                         np.float32))
        d.attrs["name"] = path.stem
        if encoder:
            d.attrs["encoder"] = encoder
        c = f.create_dataset("coords", data=np.zeros((n, 2), np.int64))
        c.attrs.update(patch_size=256, patch_size_level0=512, level0_magnification=40,
                       target_magnification=20, overlap=0)
    return path


def test_trident_job_folder_is_read_with_its_encoder(tmp_path):
    job = tmp_path / "trident_job"
    f = trident_file(job / "20x_256px_0px_overlap" / "features_conch_v1" / "S1.h5", 5, 512,
                     encoder="conch_v1")
    assert find_feature_file(job, "S1") == f  # the one encoder there
    assert load_bag(job, ["S1"]).shape == (5, 512)
    assert features_encoder(job, ["S1"]) == "conch_v1"
    other = trident_file(job / "20x_256px_0px_overlap" / "features_uni_v1" / "S1.h5", 5, 1024)
    with pytest.raises(CMTAError, match="several encoders.*features_conch_v1, features_uni_v1"):
        find_feature_file(job, "S1")  # which one? not guessed
    assert find_feature_file(job, "S1", encoder="conch_v1") == f
    assert find_feature_file(job, "S1", encoder="uni_v1") == other
    assert find_feature_file(job, "S9", encoder="uni_v1") is None
    assert load_features(f).shape == (5, 512)
    assert feature_file_encoder(f) == "conch_v1"
    check_encoder(f, 512, "conch_v1", expected_encoder="conch_v1")
    with pytest.raises(CMTAError, match="features of encoder conch_v1, expected uni_v1"):
        check_encoder(f, 512, "conch_v1", expected_encoder="uni_v1")
    with pytest.raises(CMTAError, match="512-d, expected 1024-d"):
        check_encoder(f, 512, "", expected_dim=1024)
    with pytest.raises(CMTAError, match=r"512-d, expected 2560-d \(virchow2\)"):
        check_encoder(f, 512, "", expected_encoder="virchow2")


def test_encoder_from_folder_name_or_alias(tmp_path):
    f = trident_file(tmp_path / "features_uni_v1" / "S2.h5", 3, 1024)  # no attribute
    assert feature_file_encoder(f) == "uni_v1"
    assert load_bag(tmp_path / "features_uni_v1", ["S2"]).shape == (3, 1024)
    ours = trident_file(tmp_path / "ours" / "S3.features.h5", 2, 1024)
    with h5py.File(ours, "a") as h:
        h.attrs["encoder"] = "resnet50_trunc"  # what cmta extract writes for resnet50
    assert features_encoder(tmp_path / "ours", ["S3"]) == "resnet50"
    clam = trident_file(tmp_path / "clam" / "h5_files" / "S4.h5", 2, 1024)
    assert feature_file_encoder(clam) == ""  # CLAM does not say: only the width is checked
    # one patient's slides by two encoders of the same width: refused
    trident_file(tmp_path / "ours" / "S5.features.h5", 2, 1024, encoder="uni_v1")
    with pytest.raises(CMTAError, match="different encoders"):
        load_bag(tmp_path / "ours", ["S3", "S5"])
    assert load_bag(tmp_path / "ours", ["S3"]).shape == (2, 1024)


def test_predict_refuses_features_of_another_encoder(tmp_path):
    from cmta_pipeline.predict.risk import check_features

    trident_file(tmp_path / "S1.features.h5", 4, 1024, encoder="uni_v1")
    trained = [SimpleNamespace(checkpoint={"model": {"path_dim": 1024, "encoder": "resnet50"}})]
    with pytest.raises(CMTAError, match="features of encoder uni_v1, expected resnet50"):
        check_features(trained, tmp_path, ["S1"])
    same = [SimpleNamespace(checkpoint={"model": {"path_dim": 1024, "encoder": "uni_v1"}})]
    check_features(same, tmp_path, ["S1"])
    old = [SimpleNamespace(checkpoint={"model": {"path_dim": 2560}})]  # no encoder recorded
    with pytest.raises(CMTAError, match="1024-d, expected 2560-d"):
        check_features(old, tmp_path, ["S1"])
