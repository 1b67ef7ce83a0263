"""Open a dataset by path: a .npz file, a site cache folder, or images with labels.csv."""

from pathlib import Path

from common.data.arrays import DatasetSplits
from common.data.image_folder_reader import read_image_folder
from common.data.npz_reader import read_npz
from common.data.site_cache import DATASET_FILE
from common.errors import DataFormatError

__all__ = ["load_dataset"]


def load_dataset(path: Path, image_size: int = 64, seed: int = 0) -> DatasetSplits:
    """Read ``path`` with the reader its form calls for."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        return read_npz(path)
    if path.is_dir() and (path / DATASET_FILE).is_file():  # a site cache from medfed-site prepare
        return read_npz(path / DATASET_FILE)
    if path.is_dir() and (path / "labels.csv").is_file():
        return read_image_folder(path, image_size=image_size, seed=seed)
    if not path.exists():
        raise DataFormatError(path, "no such file or folder")
    raise DataFormatError(
        path,
        "not a supported dataset: give a MedMNIST-style .npz file, a cache folder written by "
        "medfed-site prepare, or a folder of PNG/JPEG images with a labels.csv "
        "(columns file,label[,split])",
    )
