"""In-memory image arrays and the train/val/test splits every reader returns."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DatasetSplits", "ImageArrays"]


@dataclass(frozen=True)
class ImageArrays:
    """Images float32 [N, C, H, W] in [0, 1], integer labels [N], optional site ids [N].

    ``sites`` is set for data that is multi-site already (one cache per hospital).
    """

    images: np.ndarray
    labels: np.ndarray
    sites: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels shape {self.labels.shape} does not match {self.images.shape[0]} images"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray) -> "ImageArrays":
        """Return the samples at ``indices`` (a copy)."""
        sites = self.sites[indices] if self.sites is not None else None
        return ImageArrays(images=self.images[indices], labels=self.labels[indices], sites=sites)

    @staticmethod
    def concatenate(parts: "list[ImageArrays]") -> "ImageArrays":
        """Join several arrays (for example all sites' data, for the pooled baseline)."""
        has_sites = all(p.sites is not None for p in parts)
        return ImageArrays(
            images=np.concatenate([p.images for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            sites=np.concatenate([p.sites for p in parts]) if has_sites else None,  # type: ignore[misc]
        )


@dataclass(frozen=True)
class DatasetSplits:
    """A labelled dataset with its official train/val/test split."""

    train: ImageArrays
    val: ImageArrays
    test: ImageArrays
    class_names: tuple[str, ...]
    source: Path

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
