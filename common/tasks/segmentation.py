"""Segmentation task: Dice + cross-entropy loss, predicted masks and their metrics."""

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch import nn

from common.data.arrays import ImageArrays
from common.tasks.segmentation_metrics import segmentation_metrics
from common.tasks.training import make_loader

__all__ = ["DiceCrossEntropy", "criterion", "evaluate", "predict_masks", "targets"]


class DiceCrossEntropy(nn.Module):
    """MONAI's DiceCELoss on masks of class indices [B, H, W].

    Dice is computed per sample (``batch=False``) and averaged, so the loss is a mean of
    per-sample losses, as DP-SGD requires; a batch-wide Dice would mix patients' gradients.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=False)

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Loss of logits [B, K, H, W] against masks [B, H, W]."""
        return self.loss(logits, masks.long()[:, None])


def targets(data: ImageArrays) -> np.ndarray:
    """What the network learns to output: a class per pixel."""
    if data.masks is None:
        raise ValueError("segmentation needs masks: this data has image labels only")
    return data.masks


def criterion() -> nn.Module:
    """Dice + cross-entropy, a mean over the samples of the batch."""
    return DiceCrossEntropy()


@torch.no_grad()
def predict_masks(
    model: nn.Module, data: ImageArrays, batch_size: int = 64
) -> tuple[np.ndarray, float]:
    """Predicted class per pixel [N, H, W] (uint8) and the mean loss against ``data``'s masks."""
    model.eval()
    loss_fn = criterion()
    masks, total = [], 0.0
    for images, truth in make_loader(data.images, targets(data), batch_size, shuffle=False):
        logits = model(images)
        total += float(loss_fn(logits, truth)) * len(images)
        masks.append(logits.argmax(dim=1).to(torch.uint8))
    return torch.cat(masks).numpy(), total / max(len(data), 1)


def evaluate(
    model: nn.Module, data: ImageArrays, segment_names: tuple[str, ...]
) -> dict[str, float]:
    """Dice + CE loss and Dice, IoU and HD95 per class on ``data``."""
    predicted, loss = predict_masks(model, data)
    return {"loss": loss, **segmentation_metrics(targets(data), predicted, segment_names)}
