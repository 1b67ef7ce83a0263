"""Plain output files: the classification CSV and predicted masks as NIfTI."""

import csv
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["PredictionsCsv", "write_nifti_mask"]


class PredictionsCsv:
    """predictions.csv: one row per image with each class's probability and the prediction."""

    def __init__(self, path: Path, class_names: Sequence[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.class_names = tuple(class_names)
        self._file = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        header = ["input", "slice", "frame", *(f"p_{n}" for n in self.class_names), "predicted"]
        self._writer.writerow(header)

    def add(
        self,
        files: Sequence[str],
        slices: Sequence[int],
        frames: Sequence[int],
        probs: np.ndarray,
        predicted: np.ndarray,
    ) -> None:
        """Rows of images: file relative to --input, slice in its input, frame in its file.

        ``predicted`` [N] is each image's decided class index (argmax or a threshold).
        """
        rows = zip(files, slices, frames, probs, predicted, strict=True)
        for file, index, frame, row, decided in rows:
            name = self.class_names[int(decided)]
            self._writer.writerow([file, index, frame, *(f"{p:.6f}" for p in row), name])

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


def write_nifti_mask(mask: np.ndarray, affine: np.ndarray | None, path: Path) -> Path:
    """Write ``mask`` [slices, rows, cols] as a uint8 NIfTI indexed (column, row, slice).

    That is the layout of the NIfTI volumes medfed reads (and of DICOM geometry turned into an
    affine); without a known affine the identity (1 mm voxels) is used.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    volume = np.ascontiguousarray(mask.transpose(2, 1, 0).astype(np.uint8))
    image = nib.Nifti1Image(volume, np.eye(4) if affine is None else affine)
    image.set_data_dtype(np.uint8)
    if affine is not None:  # scanner coordinates, in both headers viewers read
        image.set_sform(affine, code=1)
        image.set_qform(affine, code=1)
    nib.save(image, path)
    return path
