"""The coordinator validates every site's update before averaging it (a site is hostile input)."""

import logging
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.common import Code, EvaluateRes, Status
from site_replies import SiteProxy, fit_reply, model_sent

from common import message_keys as keys
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks.threshold import choose_threshold, encode_counts, score_counts
from common.update_encoding import encode_update
from server.run_recorder import RunRecorder
from server.strategies import DeltaFedAvg, RoundHooks


def _bomb(inflated_bytes: int) -> np.ndarray:
    """A valid zlib stream of ``inflated_bytes`` zeros (a thousandth of that compressed)."""
    deflater = zlib.compressobj(9)
    parts = [deflater.compress(bytes(2**20)) for _ in range(inflated_bytes // 2**20)]
    return np.frombuffer(b"".join([*parts, deflater.flush()]), dtype=np.uint8)


def _named_reply(
    site: int, name: str, delta: list[np.ndarray], examples: int = 50, encoded: bool = True
):
    return fit_reply(site, delta, examples, name, encoded)


def test_bad_updates_are_rejected_by_name_and_the_honest_ones_averaged(tmp_path: Path) -> None:
    job = FederationJob(secure_aggregation={"enabled": False})
    torch.manual_seed(0)
    state = build_model(job.model, 1, 2, (64, 64), dp_enabled=True).state_dict()
    start = [t.numpy().copy() for t in state.values()]
    honest = [np.full_like(a, 0.01) for a in start]
    other = [np.full_like(a, 0.03) for a in start]
    nan = [a.copy() for a in honest]
    nan[0][0] = np.nan
    huge = [np.full_like(a, 1e30) for a in start]
    strategy = DeltaFedAvg(
        job, state, RunRecorder(tmp_path, 1), RoundHooks(checkpoint=lambda *_: None), 2
    )
    replies = [
        _named_reply(1, "honest-a", honest),
        _named_reply(2, "honest-b", other, examples=10**9),  # claims a billion images
        _named_reply(3, "nan-site", nan),
        _named_reply(4, "huge-site", huge),
        _named_reply(5, "shape-site", [a[..., :1] for a in honest]),
        _named_reply(6, "short-site", honest[:-1]),
        _named_reply(7, "bomb-site", [_bomb(256 * 2**20)], encoded=False),
        _named_reply(8, "raw-site", honest, encoded=False),  # not compressed
        _named_reply(9, "cut-site", [encode_update(honest)[:-8]], encoded=False),
    ]
    strategy._sampled = [int(proxy.cid) for proxy, _ in replies]
    parameters, _ = strategy.aggregate_fit(1, replies, [])
    assert parameters is not None
    new = model_sent(parameters, start)
    rejected = {r["site"]: r["reason"] for r in strategy.recorder.rejections}
    assert set(rejected) == {
        "nan-site", "huge-site", "shape-site", "short-site", "bomb-site", "raw-site", "cut-site"
    }  # fmt: skip
    assert "inflates past the" in rejected["bomb-site"]
    assert "where a plain round's delta is one compressed byte array" in rejected["raw-site"]
    assert "cut short" in rejected["cut-site"]
    assert "non-finite" in rejected["nan-site"] and "beyond" in rejected["huge-site"]
    # A plain delta travels as one compressed array: other shapes inflate to another length.
    assert all("arrays of other shapes" in rejected[s] for s in ("shape-site", "short-site"))
    # The billion-image claim is capped at max_weight (10000) against 50: weight 0.995.
    weight = 10_000 / 10_050
    for before, after in zip(start, new, strict=True):
        assert np.allclose(after - before, (1 - weight) * 0.01 + weight * 0.03, atol=1e-6)
        assert np.isfinite(after).all()


def test_a_round_with_no_valid_update_keeps_the_previous_model(tmp_path: Path) -> None:
    job = FederationJob()
    state = build_model(job.model, 1, 2, (64, 64), dp_enabled=True).state_dict()
    start = [t.numpy().copy() for t in state.values()]
    strategy = DeltaFedAvg(
        job, state, RunRecorder(tmp_path, 1), RoundHooks(checkpoint=lambda *_: None), 1
    )
    nan = [np.full_like(a, np.nan) for a in start]  # e.g. an unmasked SecAgg+ sum gone wrong
    parameters, _ = strategy.aggregate_fit(1, [_named_reply(1, "site", nan, encoded=False)], [])
    assert all(
        np.array_equal(a, b) for a, b in zip(model_sent(parameters, start), start, strict=True)
    )


def _threshold_strategy(tmp_path: Path, **job_fields: object) -> DeltaFedAvg:
    job = FederationJob.model_validate({"secure_aggregation": {"enabled": False}, **job_fields})
    state = build_model(job.model, 1, 2, (64, 64), dp_enabled=True).state_dict()
    return DeltaFedAvg(
        job, state, RunRecorder(tmp_path, 1), RoundHooks(checkpoint=lambda *_: None), 2
    )


def _honest_counts(seed: int, images: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = (rng.random(images) < 0.3).astype(np.int64)
    scores = np.clip(0.1 + 0.2 * labels + rng.normal(0, 0.05, images), 0, 1)
    return score_counts(labels, scores)


def _counts_reply(site: int, counts: np.ndarray, examples: int) -> tuple[SiteProxy, EvaluateRes]:
    metrics = {keys.SITE_NAME: f"site-{site}", keys.SCORE_COUNTS: encode_counts(counts)}
    proxy = SiteProxy(str(site))
    proxy.node_id = site
    return proxy, EvaluateRes(Status(Code.OK, ""), 0.5, examples, metrics)


def _threshold(strategy: DeltaFedAvg, replies: list[tuple[SiteProxy, EvaluateRes]]) -> float:
    strategy._sampled = [proxy.node_id for proxy, _ in replies]
    _, metrics = strategy.aggregate_evaluate(1, replies, [])
    return float(metrics["threshold"])


def _flood(images: int) -> np.ndarray:
    """A hostile site's counts: half "negatives" scoring just below THRESHOLDS[90] (0.995), half
    "positives" above the last: summed in, they push the threshold up to 0.995, where nearly
    every honest positive (scores about 0.3) is missed."""
    counts = np.zeros_like(_honest_counts(0))
    counts[0, 90] = images // 2
    counts[1, -1] = images - images // 2
    return counts


def test_score_counts_that_do_not_add_up_are_left_out_of_the_threshold(tmp_path: Path) -> None:
    strategy = _threshold_strategy(tmp_path)
    honest = _honest_counts(0)
    liar = np.zeros_like(honest)
    liar[1, 0] = 10_000  # ten thousand "positives" scoring near 0, from 20 declared images
    replies = [_counts_reply(1, honest, 200), _counts_reply(2, liar, 20)]
    assert _threshold(strategy, replies) == choose_threshold(honest)
    assert choose_threshold(honest + liar) != choose_threshold(honest)  # the lie would move it


def test_validation_images_beyond_max_weight_are_left_out_of_the_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="server.strategies")
    strategy = _threshold_strategy(tmp_path, secure_aggregation={"max_weight": 1000})
    honest = _honest_counts(0)
    flood = _flood(10**6)  # a million declared images, counts that add up
    replies = [_counts_reply(1, honest, 200), _counts_reply(2, flood, 10**6)]
    assert _threshold(strategy, replies) == choose_threshold(honest)
    assert choose_threshold(honest + flood) != choose_threshold(honest)  # it would have moved
    recorded = [s["num-examples"] for s in strategy.recorder.sites]
    assert recorded == [200, 10**6]  # the record keeps what each site declared
    assert "score counts of 1000000 images, above the job's max_weight 1000" in caplog.text


def test_with_a_robust_rule_a_minority_of_sites_cannot_set_the_threshold(tmp_path: Path) -> None:
    honest = [_honest_counts(seed) for seed in range(3)]
    hostile = _flood(1000)  # within max_weight (10,000 by default)
    replies = [_counts_reply(s + 1, c, 200) for s, c in enumerate(honest)]
    replies.append(_counts_reply(4, hostile, 1000))
    pooled = _threshold(_threshold_strategy(tmp_path / "mean"), replies)
    robust = _threshold(
        _threshold_strategy(tmp_path / "median", strategy={"aggregation": "median"}), replies
    )
    honest_choices = [choose_threshold(c) for c in honest]
    assert pooled == choose_threshold(np.sum([*honest, hostile], axis=0))
    assert pooled > 0.99  # the mean's pooled counts follow the flood
    assert min(honest_choices) <= robust <= max(honest_choices)


def test_a_float16_job_refuses_any_other_precision_by_site_and_upcasts_before_averaging(
    tmp_path: Path,
) -> None:
    """A site sending float32 (or float64) in a float16 job is refused by name.

    The honest float16 deltas are averaged in float32: weighted by 10,000 examples each, a
    float16 product would overflow (65,504) and the mean would be infinite.
    """
    job = FederationJob(
        update_precision="float16",
        secure_aggregation={"enabled": False, "clipping_range": 8.0, "max_update_norm": 1e4},
    )
    state = build_model(job.model, 1, 2, (16, 16), dp_enabled=True).state_dict()
    start = [t.numpy().copy() for t in state.values()]
    half = [np.full(a.shape, 7.0, np.float16) for a in start]  # 7 x 10,000 overflows float16
    strategy = DeltaFedAvg(
        job, state, RunRecorder(tmp_path, 1), RoundHooks(checkpoint=lambda *_: None), 2
    )
    replies = [
        _named_reply(1, "half-a", half, examples=10_000),
        _named_reply(2, "half-b", half, examples=10_000),
        _named_reply(3, "wide-site", [a.astype(np.float32) for a in half]),
        _named_reply(4, "double-site", [a.astype(np.float64) for a in half]),
    ]
    strategy._sampled = [int(proxy.cid) for proxy, _ in replies]
    parameters, _ = strategy.aggregate_fit(1, replies, [])
    rejected = {r["site"]: r["reason"] for r in strategy.recorder.rejections}
    assert set(rejected) == {"wide-site", "double-site"}
    # Compressed, a wider delta inflates past the model's float16 size and is cut off there.
    assert "inflates past the" in rejected["wide-site"], rejected["wide-site"]
    new = model_sent(parameters, start)
    for before, after in zip(start, new, strict=True):
        assert after.dtype == np.float32
        assert np.allclose(after - before, 7.0, atol=1e-5)


def test_a_reply_flooding_metrics_is_cut_to_medfeds_bounds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="server.strategies")
    strategy = _threshold_strategy(tmp_path)  # classification, 2 classes: 32 + 6 x 3 metrics
    honest = {keys.SITE_NAME: "site-1", "accuracy": 0.75, "roc_auc": 0.8}
    flood: dict[str, object] = {keys.SITE_NAME: "site-2", "accuracy": 0.5}
    flood["x" * 101] = 1.0  # a name too long
    flood["note"] = "y" * 5000  # a text too long
    flood.update({f"junk-{n}": float(n) for n in range(100_000)})
    replies = [
        (proxy, EvaluateRes(Status(Code.OK, ""), 0.5, 20, metrics))
        for proxy, metrics in ((SiteProxy("1"), honest), (SiteProxy("2"), flood))
    ]
    for node, (proxy, _) in enumerate(replies, start=1):
        proxy.node_id = node
    strategy._sampled = [1, 2]
    _, federated = strategy.aggregate_evaluate(1, replies, [])
    recorded = {s["site"]: s for s in strategy.recorder.sites}
    assert set(recorded) == {"site-1", "site-2"}
    assert recorded["site-1"].keys() >= honest.keys()  # an honest reply is kept whole
    recorder_keys = {"round", "phase", "node_id", keys.NUM_EXAMPLES, keys.EVAL_LOSS}
    assert len(recorded["site-2"].keys() - recorder_keys) == 50  # the allowance
    assert "note" not in recorded["site-2"] and "x" * 101 not in recorded["site-2"]
    assert federated["accuracy"] == 0.625  # both sites' accuracy, weighted alike
    assert sum(key.startswith("junk-") for key in federated) <= 50
    assert "99954 metrics of node 2 dropped (at most 50," in caplog.text  # 100,004 sent


def test_a_weight_of_zero_or_below_is_rejected_not_averaged(tmp_path: Path) -> None:
    """Weights 50, 50 and -99 would multiply the mean's sum by 100 / 1: the model moved 200
    times one site's delta before the fix; now the reply is refused by name."""
    strategy = _threshold_strategy(tmp_path)
    start = [array.copy() for array in strategy.global_arrays]
    delta = [np.full_like(array, 0.001, dtype=np.float32) for array in start]
    reversed_delta = [-d for d in delta]
    strategy._sampled = [1, 2, 3, 4]
    replies = [
        _named_reply(1, "site-1", delta),
        _named_reply(2, "site-2", delta),
        _named_reply(3, "site-3", reversed_delta, examples=-99),
        _named_reply(4, "site-4", reversed_delta, examples=0),
    ]
    parameters, _ = strategy.aggregate_fit(1, replies, [])
    assert parameters is not None
    moved = model_sent(parameters, start)
    for new, old, step in zip(moved, start, delta, strict=True):
        np.testing.assert_allclose(new, old + step, atol=1e-6)  # the two honest sites' mean
    refused = {r["site"]: r["reason"] for r in strategy.recorder.rejections}
    assert refused == {
        "site-3": "its reply declares -99 training images (at least 1)",
        "site-4": "its reply declares 0 training images (at least 1)",
    }
