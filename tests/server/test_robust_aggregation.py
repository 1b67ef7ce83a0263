"""Robust aggregation: one hostile delta that passes validation moves the mean, not the median."""

from pathlib import Path

import numpy as np
import pytest
import torch
from site_replies import fit_reply, model_sent

from client.site_client import clip_update_norm
from common.errors import ConfigError
from common.federation_job import FederationJob, load_federation_job
from common.models import build_model
from server.run_recorder import RunRecorder
from server.strategies import DeltaFedAvg, RoundHooks


def _norm(arrays: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.square(a, dtype=np.float64).sum() for a in arrays)))


def _round(aggregation: str, tmp_path: Path) -> tuple[float, float, dict[str, str]]:
    """4 honest sites and one sending the honest direction reversed at the norm bound.

    Returns the aggregate's distance to the honest mean, its cosine with it, and rejections.
    """
    job = FederationJob(
        strategy={"aggregation": aggregation, "byzantine_sites": 1},
        secure_aggregation={"enabled": False},
    )
    torch.manual_seed(0)
    state = build_model(job.model, 1, 2, (16, 16), dp_enabled=True).state_dict()
    start = [t.numpy().copy() for t in state.values()]
    rng = np.random.default_rng(0)
    direction = [rng.normal(0, 1, a.shape).astype(np.float32) for a in start]
    scale = 1.0 / _norm(direction)  # the honest mean has L2 norm 1
    honest = [
        [(d * scale + rng.normal(0, 0.2 * scale, d.shape)).astype(np.float32) for d in direction]
        for _ in range(4)
    ]
    bound = job.secure_aggregation.max_update_norm
    flipped = [(-d * scale * bound * 0.999).astype(np.float32) for d in direction]
    strategy = DeltaFedAvg(
        job, state, RunRecorder(tmp_path, 1), RoundHooks(checkpoint=lambda *_: None), 2
    )
    replies = [fit_reply(k, delta) for k, delta in enumerate(honest)] + [
        fit_reply(9, flipped, 10**9)
    ]
    strategy._sampled = [proxy.node_id for proxy, _ in replies]
    parameters, _ = strategy.aggregate_fit(1, replies, [])
    moved = [a - b for a, b in zip(model_sent(parameters, start), start, strict=True)]
    mean = [np.mean(layers, axis=0) for layers in zip(*honest, strict=True)]
    distance = _norm([m - h for m, h in zip(moved, mean, strict=True)])
    cosine = sum(float((m * h).sum()) for m, h in zip(moved, mean, strict=True)) / (
        _norm(moved) * _norm(mean)
    )
    rejected = {r["site"]: r["reason"] for r in strategy.recorder.rejections}
    return distance, cosine, rejected


def test_a_reversed_update_within_the_bounds_drags_the_mean_backwards(tmp_path: Path) -> None:
    distance, cosine, rejected = _round("mean", tmp_path)
    assert rejected == {}  # within every bound: validation alone cannot catch it
    assert cosine < 0 and distance > 5  # a billion claimed images, capped at max_weight


@pytest.mark.parametrize("aggregation", ["median", "trimmed-mean", "krum", "multi-krum"])
def test_robust_rules_stay_with_the_honest_sites(aggregation: str, tmp_path: Path) -> None:
    distance, cosine, _ = _round(aggregation, tmp_path)
    assert cosine > 0.9 and distance < 0.5, (aggregation, distance, cosine)


def test_a_delta_beyond_the_norm_bound_is_rejected_by_name(tmp_path: Path) -> None:
    job = FederationJob(secure_aggregation={"enabled": False, "max_update_norm": 1.0})
    state = build_model(job.model, 1, 2, (16, 16), dp_enabled=True).state_dict()
    small = [np.full_like(t.numpy(), 1e-4) for t in state.values()]  # L2 ~0.02
    long = [np.full_like(t.numpy(), 0.01) for t in state.values()]  # entries fine, L2 ~2
    strategy = DeltaFedAvg(
        job, state, RunRecorder(tmp_path, 1), RoundHooks(checkpoint=lambda *_: None), 1
    )
    strategy.hooks.site_names.update({1: "site-a", 2: "site-b"})
    strategy._sampled = [1, 2]
    strategy.aggregate_fit(1, [fit_reply(1, small), fit_reply(2, long)], [])
    rejected = {r["site"]: r["reason"] for r in strategy.recorder.rejections}
    assert list(rejected) == ["site-b"] and "max_update_norm 1" in rejected["site-b"]


def test_a_site_clips_its_delta_to_the_norm_bound() -> None:
    rng = np.random.default_rng(1)
    delta = [rng.normal(0, 1, (30, 20)).astype(np.float32), rng.normal(0, 1, 7).astype(np.float32)]
    clipped = clip_update_norm(delta, 2.0)
    assert _norm(clipped) == pytest.approx(2.0, rel=1e-5)
    assert clipped[0].dtype == np.float32
    assert np.allclose(clipped[1] / delta[1], clipped[0][0, 0] / delta[0][0, 0])  # same direction
    assert clip_update_norm(clipped, 5.0) is clipped  # a short delta is sent as it is


def test_robust_aggregation_with_secure_aggregation_is_refused(tmp_path: Path) -> None:
    job_file = tmp_path / "job.toml"
    job_file.write_text('[strategy]\naggregation = "krum"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_federation_job(job_file)
    message = str(refused.value)
    assert "\n" not in message and str(job_file) in message and "'krum'" in message
    plain = load_federation_job(job_file, {"secure_aggregation.enabled": False})
    assert plain.strategy.aggregation == "krum"
