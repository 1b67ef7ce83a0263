"""Per-volume metrics in mm and lesion-wise detection on small hand-made volumes."""

import numpy as np
import pytest
import torch
from monai.metrics import HausdorffDistanceMetric, SurfaceDistanceMetric
from monai.networks.utils import one_hot

from common.data.arrays import ImageArrays
from common.federation_job import FederationJob
from common.models import halvings
from common.tasks.volume_metrics import count_lesions, volume_metrics
from common.tasks.volume_segmentation import (
    LESION_CENTRED,
    PATCHES_PER_VOLUME,
    patch_side,
    training_patches,
)

_NAMES = ("background", "lesion")


def _box(shape: tuple[int, int, int], low: tuple[int, ...], high: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]] = 1
    return mask


def _monai(metric: HausdorffDistanceMetric | SurfaceDistanceMetric, pred, true, spacing) -> float:
    def hot(mask: np.ndarray) -> torch.Tensor:
        return one_hot(torch.from_numpy(mask.astype(np.int64))[None, None], 2)

    value = metric(hot(pred), hot(true), spacing=list(spacing))
    assert isinstance(value, torch.Tensor)
    return float(value.reshape(-1)[0])


def test_hd95_and_asd_in_mm_equal_monai_metrics_with_spacing() -> None:
    shape = (24, 20, 16)
    truth = np.stack([_box(shape, (4, 5, 3), (12, 11, 9)), _box(shape, (10, 2, 6), (18, 9, 14))])
    pred = np.stack([_box(shape, (6, 5, 4), (14, 13, 9)), _box(shape, (9, 3, 5), (17, 9, 12))])
    spacings = np.array([[0.8, 1.5, 3.0], [2.0, 1.0, 1.0]])
    ours = volume_metrics(truth, pred, spacings, _NAMES)
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    asd = SurfaceDistanceMetric(include_background=False, symmetric=True, reduction="none")
    expected_hd = [_monai(hd, p, t, s) for p, t, s in zip(pred, truth, spacings, strict=True)]
    expected_asd = [_monai(asd, p, t, s) for p, t, s in zip(pred, truth, spacings, strict=True)]
    assert ours["hd95_mm"] == pytest.approx(np.mean(expected_hd))
    assert ours["asd_mm"] == pytest.approx(np.mean(expected_asd))
    # Spacing matters: 1 mm voxels give another HD95 (the metric is not in voxels).
    in_voxels = volume_metrics(truth, pred, np.ones((2, 3)), _NAMES)
    assert in_voxels["hd95_mm"] != pytest.approx(ours["hd95_mm"])


def test_a_missed_lesion_scores_the_volume_diagonal_and_counts_as_missed() -> None:
    shape = (10, 10, 10)
    truth = _box(shape, (2, 2, 2), (4, 4, 4))[None]
    pred = np.zeros_like(truth)
    result = volume_metrics(truth, pred, np.array([[2.0, 2.0, 2.0]]), _NAMES)
    assert result["dice"] == 0.0
    assert result["hd95_mm"] == pytest.approx(np.sqrt(3) * 20.0)
    assert (result["lesions_found"], result["lesions_missed"]) == (0.0, 1.0)
    assert result["lesion_recall"] == 0.0


def test_lesions_are_connected_components_found_missed_or_false() -> None:
    shape = (20, 20, 20)
    truth = _box(shape, (1, 1, 1), (4, 4, 4)) + _box(shape, (10, 10, 10), (13, 13, 13))
    truth += _box(shape, (15, 1, 1), (18, 3, 3))  # three true lesions
    # One overlapping the first lesion, one touching the second diagonally, two elsewhere.
    pred = _box(shape, (3, 3, 3), (6, 6, 6)) + _box(shape, (13, 13, 13), (15, 15, 15))
    pred += _box(shape, (1, 15, 15), (3, 17, 17)) + _box(shape, (7, 15, 2), (8, 16, 3))
    counts = count_lesions(truth[None], pred[None])
    # The diagonal neighbour does not overlap: found 1, missed 2, false 3.
    assert (counts.found, counts.missed, counts.false) == (1, 2, 3)
    result = volume_metrics(truth[None], pred[None], np.ones((1, 3)), _NAMES)
    assert result["lesion_recall"] == pytest.approx(1 / 3)
    assert result["false_lesions_per_volume"] == 3.0


def test_patches_balance_lesion_and_background_and_keep_their_patient() -> None:
    rng = np.random.default_rng(0)
    # A lesion in a corner: a background patch (centre anywhere in 16..48) rarely reaches it.
    masks = np.stack([_box((64, 64, 64), (2, 2, 2), (6, 6, 6)) for _ in range(20)])
    data = ImageArrays(
        images=rng.random((20, 1, 64, 64, 64), dtype=np.float32),
        labels=np.ones(20, dtype=np.int64),
        masks=masks,
        patients=np.arange(20) + 7,
    )
    job = FederationJob.model_validate({"task": "segmentation-3d"})
    patches = training_patches(data, 1, job)
    side = patch_side(64, halvings(job.model.name))
    assert side == 32 and patches.images.shape == (20 * PATCHES_PER_VOLUME, 1, 32, 32, 32)
    assert list(patches.patients) == [p for p in range(7, 27) for _ in range(PATCHES_PER_VOLUME)]
    # Each patch is centred on a lesion voxel with probability LESION_CENTRED (MONAI's pos), else
    # on background, which rarely reaches the corner lesion: the share of lesion patches is near it.
    count = len(patches)
    assert abs(patches.labels.sum() / count - LESION_CENTRED) <= 0.15
    again = training_patches(data, 1, job)
    assert np.array_equal(again.images, patches.images)
