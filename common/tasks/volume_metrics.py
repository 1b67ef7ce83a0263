"""Per-volume segmentation metrics in millimetres (MONAI) and lesion-wise detection.

Dice and IoU per volume; HD95 and average surface distance with each volume's voxel spacing
(MONAI's ``compute_hausdorff_distance`` / ``compute_average_surface_distance``); lesions as
26-connected components of the foreground (scipy.ndimage.label): a true lesion is found when
any predicted voxel touches it, missed otherwise; a predicted component that touches no true
lesion is a false lesion.
"""

import math
import warnings

import numpy as np
import torch
from monai.metrics import (
    DiceMetric,
    MeanIoU,
    compute_average_surface_distance,
    compute_hausdorff_distance,
)
from monai.networks.utils import one_hot
from scipy import ndimage

__all__ = ["VOLUME_METRICS", "LesionCounts", "count_lesions", "volume_metrics"]

#: Metric names every volume evaluation reports (means over foreground classes and volumes).
VOLUME_METRICS = (
    "dice",
    "iou",
    "hd95_mm",
    "asd_mm",
    "lesion_recall",
    "false_lesions_per_volume",
    "lesions_found",
    "lesions_missed",
    "lesions_false",
)
#: The per-class metrics (the rest are over all lesions whatever their class).
_PER_CLASS = ("dice", "iou", "hd95_mm", "asd_mm")
_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)


class LesionCounts:
    """True lesions found and missed, and false predicted lesions, over a set of volumes."""

    def __init__(self) -> None:
        self.found = self.missed = self.false = 0

    def add(self, truth: np.ndarray, predicted: np.ndarray) -> None:
        """Count the lesions of one volume's foreground masks (bool [X, Y, Z])."""
        true_labels, true_count = ndimage.label(truth, _CONNECTIVITY)
        pred_labels, pred_count = ndimage.label(predicted, _CONNECTIVITY)
        touched = np.unique(true_labels[predicted & truth])
        self.found += int(np.count_nonzero(touched))
        self.missed += true_count - int(np.count_nonzero(touched))
        hits = np.unique(pred_labels[predicted & truth])
        self.false += pred_count - int(np.count_nonzero(hits))


def count_lesions(y_true: np.ndarray, y_pred: np.ndarray) -> LesionCounts:
    """Lesion-wise detection over label maps [N, X, Y, Z] (any class > 0 is lesion)."""
    counts = LesionCounts()
    for truth, predicted in zip(y_true > 0, y_pred > 0, strict=True):
        counts.add(truth, predicted)
    return counts


def _distance(
    kind: str, pred: torch.Tensor, true: torch.Tensor, spacing: tuple[float, ...]
) -> np.ndarray:
    """HD95 or ASD (mm) per foreground class of one volume's one-hot [1, K, X, Y, Z] masks.

    NaN where the class is absent from the truth; where it is present but not predicted, the
    volume's diagonal in mm (the largest distance possible in it).
    """
    diagonal = math.hypot(*(n * s for n, s in zip(true.shape[2:], spacing, strict=True)))
    present = true[0, 1:].flatten(1).any(dim=1).numpy()
    predicted = pred[0, 1:].flatten(1).any(dim=1).numpy()
    with warnings.catch_warnings():  # MONAI warns on empty masks: handled below
        warnings.simplefilter("ignore")
        if kind == "hd95":
            found = compute_hausdorff_distance(
                pred, true, include_background=False, percentile=95, spacing=list(spacing)
            )
        else:
            found = compute_average_surface_distance(
                pred, true, include_background=False, symmetric=True, spacing=list(spacing)
            )
    scores = found.reshape(-1).numpy().astype(np.float64)
    scores[~predicted] = diagonal
    scores[~present] = np.nan
    return scores


def volume_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    spacings: np.ndarray,
    segment_names: tuple[str, ...],
) -> dict[str, float]:
    """Metrics of predicted label maps [N, X, Y, Z] against the truth, ``spacings`` [N, 3] mm.

    Dice, IoU, HD95 and ASD are computed per volume and foreground class, then averaged over
    the volumes where the class is in the truth (a volume without it gives NaN: 0/0), and
    reported per class as ``<metric>_<segment name>`` and as the mean over the classes. Lesion
    detection: ``lesion_recall`` = found / (found + missed), false lesions per volume, counts.
    """
    if y_true.shape != y_pred.shape or y_true.ndim != 4:
        raise ValueError(f"masks must both be [N, X, Y, Z], got {y_true.shape} and {y_pred.shape}")
    if spacings.shape != (len(y_true), 3):
        raise ValueError(f"spacings must be [N, 3], got {spacings.shape}")
    num_classes = len(segment_names)
    per_volume: dict[str, list[np.ndarray]] = {name: [] for name in _PER_CLASS}
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    iou = MeanIoU(include_background=False, reduction="none", ignore_empty=True)
    for truth, predicted, spacing in zip(y_true, y_pred, spacings, strict=True):
        true = one_hot(torch.from_numpy(truth.astype(np.int64))[None, None], num_classes)
        pred = one_hot(torch.from_numpy(predicted.astype(np.int64))[None, None], num_classes)
        for name, metric in (("dice", dice), ("iou", iou)):
            score = metric(pred, true)
            assert isinstance(score, torch.Tensor)  # tensors in, a tensor out
            per_volume[name].append(score.reshape(-1).numpy().astype(np.float64))
        voxel = tuple(float(s) for s in spacing)
        per_volume["hd95_mm"].append(_distance("hd95", pred, true, voxel))
        per_volume["asd_mm"].append(_distance("asd", pred, true, voxel))
    results: dict[str, float] = {}
    for name, rows in per_volume.items():
        table = np.stack(rows) if rows else np.full((0, num_classes - 1), np.nan)
        with warnings.catch_warnings():  # a class absent everywhere is NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            by_class = np.nanmean(table, axis=0) if len(table) else table.sum(axis=0) * np.nan
        finite = by_class[np.isfinite(by_class)]
        results[name] = float(finite.mean()) if finite.size else math.nan
        for segment, score in zip(segment_names[1:], by_class, strict=True):
            results[f"{name}_{segment}"] = float(score)
    lesions = count_lesions(y_true, y_pred)
    true_lesions = lesions.found + lesions.missed
    results["lesion_recall"] = lesions.found / true_lesions if true_lesions else math.nan
    results["false_lesions_per_volume"] = lesions.false / max(len(y_true), 1)
    results["lesions_found"] = float(lesions.found)
    results["lesions_missed"] = float(lesions.missed)
    results["lesions_false"] = float(lesions.false)
    return results
