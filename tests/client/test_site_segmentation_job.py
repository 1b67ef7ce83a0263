"""A segmentation job on a real federation, at one site: the site client trains the U-Net with
DP-SGD on its own cache and evaluates it with Dice (real Opacus, real MONAI network)."""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from client.site_client import SiteClient
from client.site_limits import SiteLimits
from common import message_keys as keys
from common.errors import ConfigError
from common.federation_job import FederationJob
from common.model_packing import pack_arrays
from common.models import build_model

SIZE = 32


def _cache(path: Path, with_masks: bool) -> Path:
    """A site cache (npz) of bright squares on noise; the squares are the lesion masks."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {"class_names": np.array(["no-lesion", "lesion"])}
    for split, count in (("train", 48), ("val", 16), ("test", 8)):
        masks = np.zeros((count, SIZE, SIZE), dtype=np.uint8)
        for i in range(0, count, 2):  # every other image holds a lesion
            row, col = rng.integers(4, SIZE - 12, 2)
            masks[i, row : row + 8, col : col + 8] = 1
        images = rng.integers(0, 60, (count, SIZE, SIZE)) + 180 * masks
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = masks.reshape(count, -1).max(axis=1).astype(np.int64)
        if with_masks:
            arrays[f"{split}_masks"] = masks
    if with_masks:
        arrays["segment_names"] = np.array(["background", "lesion"])
    np.savez(path, **arrays)
    return path


def _job() -> FederationJob:
    return FederationJob.model_validate(
        {
            "name": "lesion-segmentation",
            "task": "segmentation",
            "rounds": 1,
            "image_size": SIZE,
            "num_classes": 2,
            "train": {"batch_size": 16, "learning_rate": 0.01},
            "privacy": {"target_epsilon": 8.0},
        }
    )


def _client(cache: Path, job: FederationJob) -> SiteClient:
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    limits = SiteLimits(data=cache, name="hospital-a", max_epsilon=10.0)
    return SiteClient(context, seed_for_round=lambda _round: 0, job=job, limits=limits)


def test_a_site_trains_and_evaluates_a_segmentation_job(tmp_path: Path) -> None:
    job = _job()
    assert (job.model.name, job.model.norm) == ("basicunet", "instance")  # the task's network
    client = _client(_cache(tmp_path / "site.npz", with_masks=True), job)
    model = build_model(job.model, 1, 2, (SIZE, SIZE), dp_enabled=True)  # the server's start
    start = [tensor.numpy().copy() for tensor in model.state_dict().values()]

    delta, examples, metrics = client.fit([pack_arrays(start)], {keys.SERVER_ROUND: 1})
    assert examples == 48
    assert 0 < float(metrics[keys.EPSILON]) <= 8.0 + 1e-6
    assert [d.shape for d in delta] == [s.shape for s in start]
    assert max(float(np.abs(d).max()) for d in delta) > 0  # it trained

    updated = [s + d for s, d in zip(start, delta, strict=True)]
    loss, count, scores = client.evaluate([pack_arrays(updated)], {keys.SERVER_ROUND: 1})
    assert count == 16 and np.isfinite(loss)
    assert {"dice", "iou", "hd95", "dice_lesion"} <= set(scores)
    assert 0.0 <= float(scores["dice"]) <= 1.0
    assert scores["site"] == "hospital-a"


def test_a_cache_without_masks_refuses_a_segmentation_job(tmp_path: Path) -> None:
    cache = _cache(tmp_path / "classification.npz", with_masks=False)
    with pytest.raises(ConfigError, match="medfed-site prepare --task segmentation"):
        _client(cache, _job())


def test_a_segmentation_job_refuses_a_classification_network() -> None:
    with pytest.raises(ValueError, match="not a segmentation network"):
        FederationJob.model_validate({"task": "segmentation", "model": {"name": "cnn"}})
