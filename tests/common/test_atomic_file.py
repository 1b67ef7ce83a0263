"""A file replaced atomically is the old one or the new one, whole; a failed write leaves
nothing behind."""

from pathlib import Path

import numpy as np
import pytest

from common.atomic_file import replaced_atomically


def test_the_new_file_replaces_the_old_and_no_temporary_file_remains(tmp_path: Path) -> None:
    target = tmp_path / "model.json"
    target.write_text("old")
    with replaced_atomically(target) as partial:
        partial.write_text("new")
        assert target.read_text() == "old"  # untouched until the block ends
    assert target.read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.json"]


def test_a_failed_write_leaves_the_old_file_and_removes_the_partial_one(tmp_path: Path) -> None:
    target = tmp_path / "dataset.npz"
    target.write_bytes(b"the cache a site already has")
    with pytest.raises(OSError, match="disk full"), replaced_atomically(target) as partial:
        partial.write_bytes(b"half a cache")
        raise OSError("disk full")
    assert target.read_bytes() == b"the cache a site already has"
    assert [path.name for path in tmp_path.iterdir()] == ["dataset.npz"]


def test_np_savez_writes_where_it_is_told(tmp_path: Path) -> None:
    target = tmp_path / "cache.npz"  # np.savez adds .npz to a name without it
    with replaced_atomically(target) as partial:
        np.savez(partial, train_images=np.arange(4))
    with np.load(target) as arrays:
        assert arrays["train_images"].tolist() == [0, 1, 2, 3]
    assert [path.name for path in tmp_path.iterdir()] == ["cache.npz"]
