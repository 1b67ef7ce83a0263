from pathlib import Path

import numpy as np
import pytest

from common.data.federated_split import split_across_sites
from common.data.loading import load_dataset
from common.data.partition import PartitionScheme, partition_indices
from common.errors import DataFormatError


def _cache(folder: Path, n: int, classes: tuple[str, ...] = ("no", "yes"), size: int = 8) -> None:
    folder.mkdir(parents=True)
    arrays = {"class_names": np.array(classes)}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.zeros((n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(n) % 2
    np.savez(folder / "dataset.npz", **arrays)


def test_a_folder_of_site_caches_keeps_each_site(tmp_path: Path) -> None:
    _cache(tmp_path / "site-a", 4)
    _cache(tmp_path / "site-b", 6)
    splits = load_dataset(tmp_path)
    assert splits.train.sites.tolist() == [0] * 4 + [1] * 6
    sites = split_across_sites(splits, 2, PartitionScheme.parse("site"), seed=0)
    assert [len(s.train) for s in sites] == [4, 6] and [len(s.val) for s in sites] == [4, 6]


def test_site_caches_must_agree(tmp_path: Path) -> None:
    _cache(tmp_path / "site-a", 4)
    _cache(tmp_path / "site-b", 4, classes=("benign", "malignant"))
    with pytest.raises(DataFormatError, match="site-b: classes"):
        load_dataset(tmp_path)


def test_site_partition_needs_site_data_and_the_right_count() -> None:
    labels = np.zeros(6, dtype=int)
    with pytest.raises(ValueError, match="needs multi-site data"):
        partition_indices(labels, 2, PartitionScheme("site"), seed=0)
    with pytest.raises(ValueError, match="comes from 3 sites, but 2 sites"):
        partition_indices(labels, 2, PartitionScheme("site"), 0, sites=np.array([0, 1, 2, 0, 1, 2]))
