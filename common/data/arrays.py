"""In-memory image arrays and the train/val/test splits every reader returns."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.config import is_segmentation
from common.data.preprocessing_contract import PreprocessingContract

__all__ = [
    "DEFAULT_SEGMENT_NAMES",
    "DatasetSplits",
    "ImageArrays",
    "mask_classes",
    "unnamed_segments",
]

#: Mask classes when nothing names them (no --segments, no dataset.json labels, no DICOM SEG
#: segment labels): background and one foreground class, never a guessed structure.
DEFAULT_SEGMENT_NAMES = ("background", "foreground")


def unnamed_segments(num_classes: int) -> tuple[str, ...]:
    """Names of ``num_classes`` mask values that nothing names: their values, 0 = background.

    Two classes are :data:`DEFAULT_SEGMENT_NAMES`; more are ``background, 1, 2, ...``.
    """
    if num_classes <= len(DEFAULT_SEGMENT_NAMES):
        return DEFAULT_SEGMENT_NAMES
    return ("background", *(str(k) for k in range(1, num_classes)))


def mask_classes(segment_names: Sequence[str] | None) -> tuple[str, str]:
    """Image classes of segmentation data: does the image's mask hold any foreground class?

    Named after the mask's own classes: ``("no-vessel", "vessel")`` for background + vessel,
    ``("no-liver+tumour", "liver+tumour")`` for several foreground classes.
    """
    foreground = "+".join(tuple(segment_names or DEFAULT_SEGMENT_NAMES)[1:])
    return f"no-{foreground}", foreground


@dataclass(frozen=True)
class ImageArrays:
    """Images float32 [N, C, H, W] in [0, 1], integer labels [N], optional site ids [N].

    Volumes are [N, C, X, Y, Z] (masks [N, X, Y, Z]), with ``affines`` (float64 [N, 4, 4],
    voxel index to RAS mm) giving each volume's voxel spacing and position.

    ``sites`` is set for data that is multi-site already (one cache per hospital).
    ``patients`` (int64 [N]) groups the images of one patient, the privacy unit of patient-level
    DP-SGD; it is None for data that does not know its patients (a plain .npz, an image folder).
    The ids are only group labels in memory: a cache stores keyed pseudonyms instead.
    ``masks`` (uint8 [N, H, W], class index per pixel, 0 = background) is set for
    segmentation data; ``labels`` then says whether a slice holds any foreground, which keeps
    partitioning and class balance reports working for both tasks.
    """

    images: np.ndarray
    labels: np.ndarray
    sites: np.ndarray | None = None
    masks: np.ndarray | None = None
    patients: np.ndarray | None = None
    affines: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim not in (4, 5):
            raise ValueError(
                f"images must be [N, C, H, W] or [N, C, X, Y, Z], got shape {self.images.shape}"
            )
        if self.affines is not None and self.affines.shape != (len(self.images), 4, 4):
            raise ValueError(f"affines must be [N, 4, 4], got shape {self.affines.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels shape {self.labels.shape} does not match {self.images.shape[0]} images"
            )
        expected = (self.images.shape[0], *self.images.shape[2:])
        if self.masks is not None and self.masks.shape != expected:
            raise ValueError(f"masks must be {expected} (one per pixel), got {self.masks.shape}")
        if self.patients is not None and self.patients.shape != self.labels.shape:
            raise ValueError(
                f"patients shape {self.patients.shape} does not match {len(self.labels)} images"
            )

    @property
    def num_patients(self) -> int | None:
        """Distinct patients, or None when the data does not know its patients."""
        return None if self.patients is None else int(np.unique(self.patients).size)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray) -> "ImageArrays":
        """Return the samples at ``indices`` (a copy)."""
        return ImageArrays(
            images=self.images[indices],
            labels=self.labels[indices],
            sites=self.sites[indices] if self.sites is not None else None,
            masks=self.masks[indices] if self.masks is not None else None,
            patients=self.patients[indices] if self.patients is not None else None,
            affines=self.affines[indices] if self.affines is not None else None,
        )

    @staticmethod
    def concatenate(parts: "list[ImageArrays]") -> "ImageArrays":
        """Join several arrays (for example all sites' data, for the pooled baseline).

        The parts hold different patients (sites never share one): each part's patient ids are
        shifted past the previous parts' so that they stay distinct.
        """
        has_sites = all(p.sites is not None for p in parts)
        has_masks = all(p.masks is not None for p in parts)
        affines = [p.affines for p in parts if p.affines is not None]
        patients: np.ndarray | None = None
        if all(p.patients is not None for p in parts):
            shifted, offset = [], 0
            for part in parts:
                ids = part.patients.astype(np.int64)  # type: ignore[union-attr]
                shifted.append(ids + offset)
                offset += int(ids.max()) + 1 if ids.size else 0
            patients = np.concatenate(shifted) if shifted else None
        return ImageArrays(
            images=np.concatenate([p.images for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            sites=np.concatenate([p.sites for p in parts]) if has_sites else None,
            masks=np.concatenate([p.masks for p in parts]) if has_masks else None,
            patients=patients,
            affines=np.concatenate(affines) if len(affines) == len(parts) else None,
        )


@dataclass(frozen=True)
class DatasetSplits:
    """A labelled dataset with its official train/val/test split."""

    train: ImageArrays
    val: ImageArrays
    test: ImageArrays
    class_names: tuple[str, ...]
    source: Path
    #: Names of the mask values 0..K-1 of segmentation data (0 is the background).
    segment_names: tuple[str, ...] | None = None
    #: How the images were prepared (a site cache's preprocessing.json); None when unknown.
    preprocessing: PreprocessingContract | None = None

    @property
    def has_masks(self) -> bool:
        """True when every split carries segmentation masks."""
        return all(part.masks is not None for part in (self.train, self.val, self.test))

    def output_classes(self, task: str) -> int:
        """Output channels of the model for ``task``: image classes, or mask classes."""
        if is_segmentation(task):
            return len(self.segment_names or DEFAULT_SEGMENT_NAMES)
        return self.num_classes

    @property
    def num_classes(self) -> int:
        """Number of label classes."""
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Number of image channels."""
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, ...]:
        """Spatial size (H, W) of every image, or (X, Y, Z) of every volume."""
        return tuple(int(side) for side in self.train.images.shape[2:])
