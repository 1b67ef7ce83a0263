"""Read a 2D image folder (images/ + masks/, or dataset.json) as a dataset, prepared in memory."""

import secrets
import tempfile
from dataclasses import replace
from pathlib import Path

from common.data.arrays import DEFAULT_SEGMENT_NAMES, DatasetSplits, mask_classes
from common.data.dicom_prepare import PreprocessingConfig
from common.data.nifti_cases import segment_names_of
from common.data.npz_reader import read_npz
from common.data.picture_cases import find_picture_cases
from common.data.picture_prepare import prepare_picture_cases
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import QualityReport
from common.data.site_cache import DATASET_FILE, write_site_cache
from common.errors import DataFormatError

__all__ = ["read_picture_folder"]


def read_picture_folder(root: Path, image_size: int = 64, seed: int = 0) -> DatasetSplits:
    """Prepare ``root`` exactly as ``medfed-site prepare --size image_size`` would (grey).

    The cache is written to a temporary folder, read back and deleted, so the images, masks,
    split by case and preprocessing contract are the ones a prepared cache would hold.

    Raises:
        DataFormatError: No image of the folder is usable; the reasons name each file.
    """
    root = Path(root)
    config = PreprocessingConfig(size=image_size)
    names = segment_names_of(root) or DEFAULT_SEGMENT_NAMES
    report = QualityReport()
    prepared = prepare_picture_cases(
        find_picture_cases(root),
        config,
        SitePseudonymiser(secrets.token_bytes(32)),  # throw-away: nothing is kept
        report,
        segment_names=names,
    )
    if not prepared.labels:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in report.skipped_files[:5])
        raise DataFormatError(root, f"no image with a mask to train on ({reasons or 'none'})")
    classes = mask_classes(prepared.segment_names)
    contract = config.contract("segmentation", classes, prepared.segment_names)
    with tempfile.TemporaryDirectory(prefix="medfed-pictures-") as folder:
        cache = Path(folder)
        write_site_cache(cache, prepared, classes, report, seed=seed, contract=contract)
        splits = read_npz(cache / DATASET_FILE)
    return replace(splits, source=root, preprocessing=contract)
