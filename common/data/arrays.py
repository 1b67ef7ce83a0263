"""In-memory image arrays and the train/val/test splits every reader returns."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_SEGMENT_NAMES", "MASK_CLASSES", "DatasetSplits", "ImageArrays"]

#: Mask classes when the data does not name them: background and one foreground class.
DEFAULT_SEGMENT_NAMES = ("background", "lesion")
#: Image classes of segmentation data: does the slice's mask hold any foreground?
MASK_CLASSES = ("no-lesion", "lesion")


@dataclass(frozen=True)
class ImageArrays:
    """Images float32 [N, C, H, W] in [0, 1], integer labels [N], optional site ids [N].

    ``sites`` is set for data that is multi-site already (one cache per hospital).
    ``masks`` (uint8 [N, H, W], class index per pixel, 0 = background) is set for
    segmentation data; ``labels`` then says whether a slice holds any foreground, which keeps
    partitioning and class balance reports working for both tasks.
    """

    images: np.ndarray
    labels: np.ndarray
    sites: np.ndarray | None = None
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels shape {self.labels.shape} does not match {self.images.shape[0]} images"
            )
        expected = (self.images.shape[0], *self.images.shape[2:])
        if self.masks is not None and self.masks.shape != expected:
            raise ValueError(f"masks must be [N, H, W] = {expected}, got {self.masks.shape}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray) -> "ImageArrays":
        """Return the samples at ``indices`` (a copy)."""
        return ImageArrays(
            images=self.images[indices],
            labels=self.labels[indices],
            sites=self.sites[indices] if self.sites is not None else None,
            masks=self.masks[indices] if self.masks is not None else None,
        )

    @staticmethod
    def concatenate(parts: "list[ImageArrays]") -> "ImageArrays":
        """Join several arrays (for example all sites' data, for the pooled baseline)."""
        sites = [p.sites for p in parts if p.sites is not None]
        masks = [p.masks for p in parts if p.masks is not None]
        return ImageArrays(
            images=np.concatenate([p.images for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            sites=np.concatenate(sites) if len(sites) == len(parts) else None,
            masks=np.concatenate(masks) if len(masks) == len(parts) else None,
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

    @property
    def has_masks(self) -> bool:
        """True when every split carries segmentation masks."""
        return all(part.masks is not None for part in (self.train, self.val, self.test))

    def output_classes(self, task: str) -> int:
        """Output channels of the model for ``task``: image classes, or mask classes."""
        if task == "segmentation":
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
    def image_size(self) -> tuple[int, int]:
        """Spatial size (H, W) of every image."""
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])
