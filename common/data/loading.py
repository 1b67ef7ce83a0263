"""Open a dataset by path: a .npz file, a site cache folder, or images with labels.csv."""

from dataclasses import replace
from pathlib import Path

import numpy as np

from common.data.arrays import DatasetSplits, ImageArrays
from common.data.image_folder_reader import read_image_folder
from common.data.npz_reader import read_npz
from common.data.picture_cases import is_picture_folder
from common.data.preprocessing_contract import PreprocessingContract, read_contract_beside
from common.data.site_cache import DATASET_FILE
from common.errors import DataFormatError

__all__ = ["load_dataset"]


def _read_npz_with_contract(path: Path) -> DatasetSplits:
    """A .npz file with the preprocessing contract beside it, if there is one."""
    return replace(read_npz(path), preprocessing=read_contract_beside(path))


def _one_contract(caches: list[Path], parts: list[DatasetSplits]) -> PreprocessingContract | None:
    """The caches' common contract; refuses caches prepared differently, naming the fields."""
    first = parts[0].preprocessing
    for cache, part in zip(caches[1:], parts[1:], strict=True):
        found = part.preprocessing
        if first is None and found is None:
            continue
        if first is None or found is None:
            has = "has" if found is not None else "has no"
            raise DataFormatError(cache, f"{has} preprocessing record, unlike {caches[0]}")
        differing = first.differences(found)
        if differing:
            reason = f"prepared differently from {caches[0]}: " + "; ".join(differing)
            raise DataFormatError(cache, reason)
    return first


def _read_site_caches(root: Path, caches: list[Path]) -> DatasetSplits:
    """Several hospitals' caches as one dataset whose samples remember their site."""
    parts = [_read_npz_with_contract(cache / DATASET_FILE) for cache in caches]
    for cache, part in zip(caches, parts, strict=True):
        if part.class_names != parts[0].class_names:
            raise DataFormatError(
                cache,
                f"classes {part.class_names} differ from {parts[0].class_names} of {caches[0]}",
            )
        if part.segment_names != parts[0].segment_names:
            raise DataFormatError(
                cache,
                f"mask classes {part.segment_names} differ from {parts[0].segment_names} "
                f"of {caches[0]}",
            )
        if part.image_size != parts[0].image_size:
            raise DataFormatError(
                cache,
                f"image size {part.image_size} differs from {parts[0].image_size} of {caches[0]}",
            )

    def joined(split: str) -> ImageArrays:
        return ImageArrays.concatenate(
            [
                replace(getattr(part, split), sites=np.full(len(getattr(part, split)), k))
                for k, part in enumerate(parts)
            ]
        )

    return DatasetSplits(
        train=joined("train"),
        val=joined("val"),
        test=joined("test"),
        class_names=parts[0].class_names,
        source=root,
        segment_names=parts[0].segment_names,
        preprocessing=_one_contract(caches, parts),
    )


def load_dataset(path: Path, image_size: int = 64, seed: int = 0) -> DatasetSplits:
    """Read ``path`` with the reader its form calls for.

    A folder holding several site caches (``*/dataset.npz``, in name order) reads as one
    multi-site dataset: the ``site`` partition then keeps each hospital's own data.
    """
    path = Path(path)
    caches = sorted(p.parent for p in path.glob(f"*/{DATASET_FILE}")) if path.is_dir() else []
    if caches and not (path / DATASET_FILE).exists():
        return _read_site_caches(path, caches)
    if path.is_file() and path.suffix.lower() == ".npz":
        return _read_npz_with_contract(path)
    if path.is_dir() and (path / DATASET_FILE).is_file():  # a site cache from medfed-site prepare
        return _read_npz_with_contract(path / DATASET_FILE)
    if path.is_dir() and (path / "labels.csv").is_file():
        return read_image_folder(path, image_size=image_size, seed=seed)
    if path.is_dir() and is_picture_folder(path):
        # imported here: preparing needs MONAI, which reading a cache does not
        from common.data.picture_dataset import read_picture_folder

        return read_picture_folder(path, image_size=image_size, seed=seed)
    if not path.exists():
        raise DataFormatError(path, "no such file or folder")
    raise DataFormatError(
        path,
        "not a supported dataset: give a MedMNIST-style .npz file, a cache folder written by "
        "medfed-site prepare, a folder of PNG/JPEG images with a labels.csv "
        "(columns file,label[,split]), or a 2D image folder (images/ + masks/, or dataset.json "
        "with imagesTr/labelsTr of pictures or 2D NIfTI)",
    )
