"""Segmentation metrics per class: Dice, IoU and 95th-percentile Hausdorff distance (MONAI)."""

import math
import warnings

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU
from monai.networks.utils import one_hot

__all__ = ["SEGMENTATION_METRICS", "segmentation_metrics"]

#: Metric names every segmentation evaluation reports (means over the foreground classes).
SEGMENTATION_METRICS = ("dice", "iou", "hd95")


def _one_hot(masks: np.ndarray, num_classes: int) -> torch.Tensor:
    return one_hot(torch.from_numpy(masks.astype(np.int64))[:, None], num_classes)


def _pooled(metric: DiceMetric | MeanIoU, pred: torch.Tensor, true: torch.Tensor) -> np.ndarray:
    """A Dice-type score over all pixels of the set at once: slices side by side, one image.

    Pixel counts add up, so this is the score of the whole set, not a mean of per-slice scores
    (which slices without lesion would dominate: 0/0 there is either undefined or a free 1).
    """

    def side_by_side(masks: torch.Tensor) -> torch.Tensor:  # [N, K, H, W] -> [1, K, N*H, W]
        return masks.permute(1, 0, 2, 3).reshape(1, masks.shape[1], -1, masks.shape[3])

    scores = metric(side_by_side(pred), side_by_side(true))
    assert isinstance(scores, torch.Tensor)  # tensors in, a tensor out (MONAI types lists too)
    return scores.reshape(-1).numpy()


def _hd95_per_class(
    pred: torch.Tensor, true: torch.Tensor, spacing: tuple[float, float] | None = None
) -> np.ndarray:
    """Mean HD95 over slices whose ground truth has the class, in pixels (or mm).

    With the (row, column) ``spacing`` of the masks, distances are in mm.
    A slice where the class is present but not predicted scores the image diagonal, the
    largest distance possible on it; slices without the class in the ground truth are left out.
    """
    num_classes = true.shape[1]
    scale = spacing or (1.0, 1.0)
    diagonal = math.hypot(true.shape[2] * scale[0], true.shape[3] * scale[1])
    scores = np.full(num_classes - 1, np.nan)
    metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    for cls in range(1, num_classes):
        present = true[:, cls].flatten(1).any(dim=1)
        if not present.any():
            continue
        pred_c, true_c = pred[present][:, cls : cls + 1], true[present][:, cls : cls + 1]
        missed = ~pred_c.flatten(1).any(dim=1)
        distances = np.full(len(true_c), diagonal)
        if (~missed).any():
            with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal argument
                warnings.filterwarnings("ignore", message=".*always_return_as_numpy")
                found = metric(pred_c[~missed], true_c[~missed], spacing=list(scale))
            assert isinstance(found, torch.Tensor)  # as in _pooled
            distances[(~missed).numpy()] = found.reshape(-1)
        scores[cls - 1] = float(distances.mean())
    return scores


def segmentation_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    segment_names: tuple[str, ...],
    spacing: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Metrics of predicted masks [N, H, W] against true masks [N, H, W] (class index per pixel).

    Dice and IoU are computed over the pixels of the whole set, per foreground class; HD95 (in
    pixels of the masks given, or in mm given their (row, column) ``spacing``) per slice
    holding the class, then averaged. Each metric is
    reported per class as ``<metric>_<segment name>`` and as the mean over foreground classes;
    a class absent from both prediction and ground truth is NaN.
    """
    if y_true.shape != y_pred.shape or y_true.ndim != 3:
        raise ValueError(f"masks must both be [N, H, W], got {y_true.shape} and {y_pred.shape}")
    num_classes = len(segment_names)
    true = _one_hot(y_true, num_classes)
    pred = _one_hot(y_pred, num_classes)
    per_class = {
        "dice": _pooled(DiceMetric(include_background=False, reduction="none"), pred, true),
        "iou": _pooled(MeanIoU(include_background=False, reduction="none"), pred, true),
        "hd95": _hd95_per_class(pred, true, spacing),
    }
    results: dict[str, float] = {}
    for name, scores in per_class.items():
        finite = scores[np.isfinite(scores)]
        results[name] = float(finite.mean()) if finite.size else math.nan
        for segment, score in zip(segment_names[1:], scores, strict=True):
            results[f"{name}_{segment}"] = float(score)
    return results
