"""Dice, IoU and HD95 against hand-computed values; the segmentation loss and model under DP."""

import math

import numpy as np
import pytest
import torch

from common.data.arrays import ImageArrays
from common.errors import ConfigError
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.models import build_model
from common.tasks.segmentation import DiceCrossEntropy, evaluate
from common.tasks.segmentation_metrics import segmentation_metrics

NAMES = ("background", "lesion")


def _truth() -> np.ndarray:
    truth = np.zeros((3, 8, 8), dtype=np.uint8)
    truth[0, 2:4, 2:4] = 1  # 4 pixels
    truth[1, 5:7, 1:3] = 1  # 4 pixels; slice 2 has no lesion
    return truth


def test_perfect_prediction_scores_dice_and_iou_one_and_distance_zero() -> None:
    truth = _truth()
    assert segmentation_metrics(truth, truth.copy(), NAMES) == {
        "dice": 1.0, "dice_lesion": 1.0, "iou": 1.0, "iou_lesion": 1.0,
        "hd95": 0.0, "hd95_lesion": 0.0,
    }  # fmt: skip


def test_partial_prediction_matches_hand_computed_values() -> None:
    truth = _truth()
    predicted = truth.copy()
    predicted[0, 2:4, 4] = 1  # 2 false positives next to the first lesion
    predicted[1] = 0  # the second lesion is missed
    metrics = segmentation_metrics(truth, predicted, NAMES)
    # 8 true pixels, 6 predicted, 4 in common: Dice 2*4/(8+6), IoU 4/(8+6-4)
    assert metrics["dice"] == pytest.approx(8 / 14, abs=1e-6)
    assert metrics["iou"] == pytest.approx(0.4, abs=1e-6)
    # slice 0: the extra column is 1 pixel from the lesion; slice 1 missed: the diagonal
    assert metrics["hd95"] == pytest.approx((1.0 + math.hypot(8, 8)) / 2)


def test_metrics_are_reported_per_class_and_absent_classes_are_nan() -> None:
    truth = _truth()
    truth[2, 0:2, 0:2] = 2  # a second class, predicted nowhere
    predicted = _truth()
    metrics = segmentation_metrics(truth, predicted, ("background", "lesion", "oedema", "cyst"))
    assert metrics["dice_lesion"] == 1.0 and metrics["dice_oedema"] == 0.0
    assert math.isnan(metrics["dice_cyst"]) and math.isnan(metrics["hd95_cyst"])
    assert metrics["dice"] == pytest.approx(0.5)  # mean over the classes that occur


def test_dice_ce_loss_is_a_mean_of_per_sample_losses() -> None:
    """DP-SGD needs it: a batch-wide Dice would couple the samples of a batch."""
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 8, 8)
    masks = torch.from_numpy(np.concatenate([_truth(), _truth()[:1]]))
    loss = DiceCrossEntropy()
    per_sample = torch.stack([loss(logits[i : i + 1], masks[i : i + 1]) for i in range(4)])
    assert loss(logits, masks) == pytest.approx(float(per_sample.mean()), rel=1e-5)


def _blobs(n: int, seed: int) -> ImageArrays:
    rng = np.random.default_rng(seed)
    images = rng.normal(0.3, 0.05, (n, 1, 32, 32)).astype(np.float32)
    masks = np.zeros((n, 32, 32), dtype=np.uint8)
    for i in range(0, n, 2):
        r, c = rng.integers(2, 24, 2)
        masks[i, r : r + 6, c : c + 6] = 1
    images[:, 0][masks == 1] += 0.5
    return ImageArrays(images=images.clip(0, 1), labels=masks.any(axis=(1, 2)).astype(np.int64),
                       masks=masks)  # fmt: skip


@pytest.mark.parametrize("name", ["basicunet", "unet"])
def test_segmentation_networks_train_under_dp_sgd(name: str) -> None:
    job = FederationJob.model_validate(
        {
            "task": "segmentation",
            "rounds": 1,
            "model": {"name": name, "norm": "instance"},
            "train": {"batch_size": 16, "learning_rate": 0.01, "local_epochs": 2},
            "privacy": {"enabled": True, "target_epsilon": 50.0, "target_delta": 1e-3},
        }
    )
    torch.manual_seed(0)
    model = build_model(job.model, 1, 2, (32, 32), dp_enabled=True)
    data = _blobs(64, seed=1)
    before = evaluate(model, data, NAMES)
    update = train_local_round(model, data, job, seed=0, privacy_state=None)
    after = evaluate(model, data, NAMES)
    assert update.epsilon is not None and 0 < update.epsilon <= 50.5
    assert update.steps > 0
    assert after["loss"] < before["loss"]


def test_an_image_size_the_network_cannot_halve_is_refused_with_the_fix() -> None:
    job = FederationJob.model_validate({"task": "segmentation"})
    with pytest.raises(ConfigError, match=r"multiples of 16 and at least 32, got \(24, 24\)"):
        build_model(job.model, 1, 2, (24, 24), dp_enabled=True)
