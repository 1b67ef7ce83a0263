"""Data quality report of a site's images: what was read, what was skipped and why, statistics."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

__all__ = ["IntensityStats", "QualityReport", "pseudonymous_path"]


def pseudonymous_path(path: str, pseudonymise: Callable[[str], str]) -> str:
    """``path`` with each folder and file name replaced by its keyed pseudonym, suffixes kept.

    Export folders are often named by patient ID or name, and files by their SOPInstanceUID:
    the JSON report names a file as ``p-<10 hex>/.../p-<10 hex>.dcm`` instead (the same name
    gives the same pseudonym under one site key, so files of one folder stay together).
    """
    parts = PurePosixPath(path).parts
    named = []
    for i, part in enumerate(parts):
        suffix = "".join(PurePosixPath(part).suffixes)[:16] if i == len(parts) - 1 else ""
        suffix = suffix if suffix.replace(".", "").isalnum() else ""
        named.append(f"p-{pseudonymise('path:' + part)[:10]}{suffix}")
    return "/".join(named)


@dataclass
class IntensityStats:
    """Running intensity statistics in modality units (before normalisation)."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    minimum: float = float("inf")
    maximum: float = float("-inf")

    def add(self, values: np.ndarray) -> None:
        """Accumulate one image."""
        flat = np.ravel(values)  # no copy: one pass each
        self.count += flat.size
        # Pairwise summation in the array's dtype: float32 keeps ~1e-7 relative error per image
        # (sums of images then add up in Python floats), and avoids a float64 copy per image.
        self.total += float(flat.sum())
        self.total_sq += float(np.dot(flat, flat))
        self.minimum = min(self.minimum, float(flat.min()))
        self.maximum = max(self.maximum, float(flat.max()))

    def add_moments(
        self, count: int, total: float, total_sq: float, minimum: float, maximum: float
    ) -> None:
        """Accumulate values given by their count, sum, sum of squares, minimum and maximum."""
        self.count += count
        self.total += total
        self.total_sq += total_sq
        self.minimum = min(self.minimum, minimum)
        self.maximum = max(self.maximum, maximum)

    def merge(self, other: "IntensityStats") -> None:
        """Add the images ``other`` has accumulated."""
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def as_dict(self) -> dict[str, float]:
        """Mean, standard deviation, minimum and maximum."""
        if self.count == 0:
            return {}
        mean = self.total / self.count
        variance = max(self.total_sq / self.count - mean**2, 0.0)
        return {
            "min": self.minimum,
            "max": self.maximum,
            "mean": mean,
            "std": variance**0.5,
        }


@dataclass
class QualityReport:
    """Everything ``medfed-site check`` and ``prepare`` report; holds no DICOM attribute value.

    Series are named by their site pseudonym; skipped files by their path under the data folder,
    in the JSON form pseudonymised by ``path_names`` when it is set (see docs/site-data.md).
    """

    files_seen: int = 0
    series_per_modality: dict[str, int] = field(default_factory=dict)
    images_per_modality: dict[str, int] = field(default_factory=dict)
    intensity: dict[str, IntensityStats] = field(default_factory=dict)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    inconsistent_spacing: list[dict[str, Any]] = field(default_factory=list)
    segmentation_objects: int = 0
    unlabelled_images: int = 0
    unlabelled_series: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    split_counts: dict[str, int] = field(default_factory=dict)
    #: Per registered series (``prepare --register/--sequences``): metric before and after.
    registration: list[dict[str, Any]] = field(default_factory=list)
    #: Series or studies left out whole (registration failed, a sequence missing), with why.
    excluded: list[dict[str, str]] = field(default_factory=list)
    #: Names skipped files in :meth:`as_dict` (e.g. :func:`pseudonymous_path`); None: as read.
    path_names: Callable[[str], str] | None = field(default=None, repr=False, compare=False)

    def count_series(self, modality: str) -> None:
        """One more series (or volume) of ``modality``."""
        self.series_per_modality[modality] = self.series_per_modality.get(modality, 0) + 1

    def count_images(self, modality: str, images: int) -> None:
        """``images`` more 2D images of ``modality``."""
        self.images_per_modality[modality] = self.images_per_modality.get(modality, 0) + images

    def count_classes(self, labels: list[int], class_names: tuple[str, ...]) -> None:
        """Labelled images per class name."""
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
        self.class_counts = {name: int(c) for name, c in zip(class_names, counts, strict=True)}

    def skip(self, path: str, reason: str) -> None:
        """Record a file that was not used."""
        self.skipped_files.append({"path": path, "reason": reason})

    def exclude(self, key: str, reason: str) -> None:
        """Record a series or study (by pseudonym) that was left out whole."""
        self.excluded.append({"key": key, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "files_seen": self.files_seen,
            "images_used": sum(self.class_counts.values()),
            "series_per_modality": self.series_per_modality,
            "images_per_modality": self.images_per_modality,
            "intensity_per_modality": {m: s.as_dict() for m, s in self.intensity.items()},
            "segmentation_objects": self.segmentation_objects,
            "skipped_count": len(self.skipped_files),
            "skipped_files": [
                {**entry, "path": self.path_names(entry["path"])} if self.path_names else entry
                for entry in self.skipped_files
            ],
            "inconsistent_spacing": self.inconsistent_spacing,
            "unlabelled": {"images": self.unlabelled_images, "series": self.unlabelled_series},
            "class_counts": self.class_counts,
            "split_counts": self.split_counts,
            **({"registration": self.registration} if self.registration else {}),
            **({"excluded": self.excluded} if self.excluded else {}),
        }
