"""bench/pneumonia_public_split.py: the public stand-in never overlaps the hospitals' data."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from common.data.arrays import ImageArrays
from common.data.npz_reader import read_npz
from common.data.npz_writer import write_npz

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "pneumonia_public_split.py"


def _unique_images(count: int, offset: int, labels: np.ndarray) -> ImageArrays:
    """``count`` 4x4 images, each told apart by its first two pixels (values offset + index)."""
    images = np.zeros((count, 1, 4, 4), dtype=np.float32)
    ids = offset + np.arange(count)
    images[:, 0, 0, 0] = (ids // 256) / 255.0
    images[:, 0, 0, 1] = (ids % 256) / 255.0
    return ImageArrays(images=images, labels=labels)


def _ids(part: ImageArrays) -> set[int]:
    pixels = np.round(part.images[:, 0, 0, :2] * 255.0).astype(int)
    return set((pixels[:, 0] * 256 + pixels[:, 1]).tolist())


def test_public_images_come_from_val_only_and_the_hospitals_keep_train_and_test(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    splits = {
        "train": _unique_images(60, 0, rng.integers(0, 2, 60)),
        "val": _unique_images(40, 1000, np.array([0] * 10 + [1] * 30)),
        "test": _unique_images(20, 2000, rng.integers(0, 2, 20)),
    }
    source = write_npz(tmp_path / "source.npz", splits, ("normal", "pneumonia"))
    public_path, hospitals_path = tmp_path / "public.npz", tmp_path / "hospitals.npz"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(source), "--public", "32",
         "--out-public", str(public_path), "--out-hospitals", str(hospitals_path)],
        check=True, capture_output=True,
    )  # fmt: skip
    public, hospitals = read_npz(public_path), read_npz(hospitals_path)
    assert len(public.val) == len(public.test) == 0
    assert _ids(public.train) | _ids(hospitals.val) == _ids(splits["val"])
    assert not _ids(public.train) & _ids(hospitals.val)
    assert _ids(hospitals.train) == _ids(splits["train"])
    assert _ids(hospitals.test) == _ids(splits["test"])
    assert np.array_equal(hospitals.train.labels, splits["train"].labels)
    # stratified: the public part keeps val's 1:3 label ratio
    assert np.bincount(public.train.labels).tolist() == [8, 24]
