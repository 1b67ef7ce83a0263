"""Grad-CAM saliency of a classification network (MONAI's GradCAM)."""

import copy
from collections import Counter

import numpy as np
import torch
from monai.visualize import GradCAM
from torch import nn

__all__ = ["Saliency", "last_feature_layer"]


def last_feature_layer(network: nn.Module, in_channels: int, size: int) -> str:
    """Name of the last layer that outputs a spatial feature map, found by a dry run.

    That is the last convolutional stage before pooling and the classifier head (MONAI's own
    examples: ``layer4`` of a ResNet, ``class_layers.relu`` of a DenseNet). Layers called more
    than once per forward pass (shared activations) are passed over: Grad-CAM hooks need one
    activation per layer. Maps of one pixel are used only when nothing larger exists.
    """
    finished: list[tuple[str, tuple[int, ...]]] = []
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: finished.append(
                (name, tuple(out.shape) if isinstance(out, torch.Tensor) else ())
            )
        )
        for name, module in network.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            network.eval()(torch.zeros(1, in_channels, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    calls = Counter(name for name, _ in finished)
    maps = [(n, s) for n, s in finished if len(s) == 4 and calls[n] == 1]
    larger = [n for n, s in maps if s[2] * s[3] > 1]
    if larger:
        return larger[-1]
    if maps:
        return maps[-1][0]
    raise ValueError("the network has no layer with a spatial feature map for Grad-CAM")


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map to [0, 1] (MONAI's default normaliser inverts them); flat maps -> 0."""
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(dim=1).values.view(-1, *[1] * (maps.dim() - 1))
    span = (flat.max(dim=1).values - flat.min(dim=1).values).view(-1, *[1] * (maps.dim() - 1))
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), torch.zeros_like(maps))


class Saliency:
    """Grad-CAM maps of a classifier, for the class each image was predicted as."""

    def __init__(self, network: nn.Module, in_channels: int, size: int) -> None:
        # A copy: GradCAM leaves hooks on the network it is given.
        self.network = copy.deepcopy(network).eval()
        self.layer = last_feature_layer(self.network, in_channels, size)
        self._cam = GradCAM(self.network, target_layers=self.layer, postprocessing=_unit_range)

    def __call__(self, batch: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Maps [N, size, size] in [0, 1] for images [N, 1, size, size] and classes [N].

        Images predicted as the same class go through GradCAM together (it explains one class
        index per call).
        """
        maps = np.zeros((batch.shape[0], *batch.shape[2:]), dtype=np.float32)
        for class_index in np.unique(classes):
            chosen = np.flatnonzero(classes == class_index)
            # Inputs that need gradients keep full backward hooks quiet (and correct).
            images = torch.from_numpy(np.ascontiguousarray(batch[chosen])).requires_grad_(True)
            with torch.enable_grad():
                result = self._cam(images, class_idx=int(class_index))
            maps[chosen] = result[:, 0].detach().numpy()
        return maps
