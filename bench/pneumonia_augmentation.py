"""Image augmentations and post-processing for the PneumoniaMNIST DP benches (no job option).

Augmentations act on a batch [B, C, H, W] of preprocessed images with torch's global RNG:
``flip`` mirrors each image left-right with probability 1/2; ``shift`` translates it by up to
``SHIFT`` pixels in each direction (reflect padding, then a random crop of the original size, the
CIFAR-style crop De et al. 2022 use); ``flip-shift`` does both. ``flip_average`` is test-time
augmentation: the class probabilities of an image and of its mirror image, averaged.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.data.arrays import ImageArrays
from common.tasks.classification import predict_probabilities

__all__ = ["AUGMENTATIONS", "SHIFT", "augment", "average_states", "flip_average"]

#: Names accepted by :func:`augment`.
AUGMENTATIONS = ("none", "flip", "shift", "flip-shift")
#: Largest translation of ``shift``, in pixels (of 28).
SHIFT = 2


def _flip(images: torch.Tensor) -> torch.Tensor:
    mirrored = torch.rand(len(images)) < 0.5
    return torch.where(mirrored[:, None, None, None], images.flip(3), images)


def _shift(images: torch.Tensor) -> torch.Tensor:
    height, width = images.shape[2:]
    padded = F.pad(images, (SHIFT, SHIFT, SHIFT, SHIFT), mode="reflect")
    offsets = torch.randint(0, 2 * SHIFT + 1, (len(images), 2))
    return torch.stack(
        [
            padded[i, :, int(dy) : int(dy) + height, int(dx) : int(dx) + width]
            for i, (dy, dx) in enumerate(offsets)
        ]
    )


def augment(images: torch.Tensor, name: str) -> torch.Tensor:
    """``images`` with augmentation ``name`` (one of :data:`AUGMENTATIONS`) drawn per image."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augmentation {name!r}: choose from {AUGMENTATIONS}")
    if "shift" in name:
        images = _shift(images)
    if "flip" in name:
        images = _flip(images)
    return images


def flip_average(model: nn.Module, data: ImageArrays) -> np.ndarray:
    """Class probabilities [N, K] averaged over each image and its left-right mirror image."""
    mirrored = ImageArrays(images=np.ascontiguousarray(data.images[..., ::-1]), labels=data.labels)
    return (predict_probabilities(model, data) + predict_probabilities(model, mirrored)) / 2


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of state dicts of one network (Polyak averaging of iterates)."""
    return {key: torch.stack([s[key] for s in states]).mean(0) for key in states[0]}
