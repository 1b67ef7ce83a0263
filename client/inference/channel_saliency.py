"""Grad-CAM of a multi-sequence classifier shown on each sequence, and each sequence's share.

A model trained on stacked sequences (``prepare --sequences``) sees them as channels of one
image. Its Grad-CAM map (one per image, from the last feature layer) is drawn over every
sequence's own channel, one overlay per sequence named as in the model's preprocessing
contract, so a reader compares where the evidence lies with what each sequence shows. Each
sequence's share of the decision is the input x gradient attribution (Shrikumar et al., 2016,
"Not Just a Black Box", arXiv:1605.01713) of the predicted class's score, summed over that
channel's pixels in absolute value and divided by the sum over the sequences. Mask channels of
zero-filled sequences (``presence_channels``) are not images: they get no overlay and no share.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from client.inference.overlays import heat_overlay, write_png
from common.data.preprocessing_contract import PreprocessingContract

__all__ = ["channel_shares", "sequence_names", "write_sequence_overlays"]


def sequence_names(contract: PreprocessingContract | None) -> tuple[str, ...]:
    """The image channels' names when the model stacks two or more named sequences, else ()."""
    if contract is None or not contract.channel_names:
        return ()
    names = tuple(contract.channel_names.split(","))
    return names if len(names) >= 2 else ()


def channel_shares(
    network: nn.Module, batch: np.ndarray, classes: np.ndarray, channels: int
) -> np.ndarray:
    """Each of the first ``channels`` channels' share of each image's predicted score, [N, C].

    ``batch`` [N, C', size, size] (C' >= ``channels``), ``classes`` [N] the predicted classes.
    Rows sum to 1; an image whose attribution is zero everywhere gets equal shares.
    """
    images = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).requires_grad_(True)
    network.eval()
    with torch.enable_grad():
        scores = network(images)
        chosen = scores.gather(1, torch.from_numpy(classes.astype(np.int64)).view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(chosen, images)
    attribution = (gradient * images).abs()[:, :channels].sum(dim=(2, 3)).detach().numpy()
    total = attribution.sum(axis=1, keepdims=True)
    equal = np.full_like(attribution, 1.0 / channels)
    return np.where(total > 0, attribution / np.where(total > 0, total, 1.0), equal)


def write_sequence_overlays(
    batch: np.ndarray,
    maps: np.ndarray,
    names: tuple[str, ...],
    paths_for: Callable[[str, int], list[Path]],
) -> dict[str, list[Path]]:
    """One Grad-CAM overlay per image and sequence; returns the paths written by sequence.

    ``batch`` [N, C, size, size] the network's input, ``maps`` [N, size, size] its Grad-CAM
    maps in [0, 1], ``paths_for(name, N)`` the N overlay paths of sequence ``name``.
    """
    written: dict[str, list[Path]] = {}
    for index, name in enumerate(names):
        paths = paths_for(name, len(batch))
        for image, heat, path in zip(batch[:, index], maps, paths, strict=True):
            write_png(heat_overlay(image, heat), path)
        written[name] = paths
    return written
