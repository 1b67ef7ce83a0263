"""Threshold data: every image of the coordinator's data, or a refusal naming the path."""

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from common.data.arrays import ImageArrays
from common.data.npz_writer import write_npz
from common.errors import DataFormatError
from common.federation_job import FederationJob, load_federation_job
from common.threshold_data import load_threshold_data
from simulations.synthetic_lesions import write_synthetic_lesions


def _job(path: Path | str, **fields: object) -> FederationJob:
    return FederationJob.model_validate({"image_size": 16, "threshold_data": str(path), **fields})


def test_every_split_of_the_data_is_used(tmp_path: Path) -> None:
    path = write_synthetic_lesions(
        tmp_path / "public.npz", n_train=40, n_val=12, n_test=20, image_size=16
    )
    data = load_threshold_data(_job(path))
    assert data is not None and len(data) == 72
    assert set(np.unique(data.labels)) == {0, 1}
    assert load_threshold_data(FederationJob()) is None


def test_data_that_does_not_fit_the_job_is_refused_by_path(tmp_path: Path) -> None:
    path = write_synthetic_lesions(tmp_path / "p.npz", n_train=8, n_val=4, n_test=4, image_size=16)
    with pytest.raises(DataFormatError, match=r"p\.npz: threshold data of 1 channel\(s\) at"):
        load_threshold_data(_job(path, image_size=32))
    with pytest.raises(DataFormatError, match="classes no-lesion,lesion differ from .* a,b"):
        load_threshold_data(_job(path, class_names="a,b"))
    with pytest.raises(DataFormatError, match="missing.npz"):
        load_threshold_data(_job(tmp_path / "missing.npz"))


def test_data_without_both_classes_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def negatives(n: int) -> ImageArrays:
        images = rng.random((n, 1, 16, 16)).astype(np.float32)
        return ImageArrays(images=images, labels=np.zeros(n, dtype=np.int64))

    path = write_npz(
        tmp_path / "negatives.npz",
        {"train": negatives(6), "val": negatives(2), "test": negatives(2)},
        ("no-lesion", "lesion"),
    )
    with pytest.raises(DataFormatError, match=r"negatives\.npz: .*both classes.*\[10, 0\]"):
        load_threshold_data(_job(path))


def test_the_job_takes_threshold_data_for_two_class_classification_only(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="threshold_data applies to two-class"):
        _job(tmp_path / "p.npz", num_classes=3)
    with pytest.raises(ValidationError, match="threshold_data applies to two-class"):
        _job(tmp_path / "p.npz", task="segmentation", model={"name": "basicunet"})


def test_a_relative_path_in_a_job_file_names_data_next_to_it(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "job.toml").write_text('threshold_data = "public-cache"\n')
    job = load_federation_job(tmp_path / "jobs" / "job.toml")
    assert job.threshold_data == str((tmp_path / "jobs" / "public-cache").resolve())
