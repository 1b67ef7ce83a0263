"""The coordinator sends the global model in a few message parts; a site gets it back exactly."""

from pathlib import Path

import numpy as np
import torch
from flwr.common import FitIns, Parameters, ndarrays_to_parameters
from flwr.compat.common.recorddict_compat import fitins_to_recorddict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from site_replies import fit_reply, model_sent

from common.federation_job import FederationJob
from common.models import build_model
from server.run_recorder import RunRecorder
from server.strategies import DeltaFedAvg, RoundHooks


def _parts(parameters: Parameters) -> int:
    """The objects Flower stores and each site pulls one by one for a fit message's content."""
    return len(get_all_nested_objects(fitins_to_recorddict(FitIns(parameters, {}), True)))


def test_the_fit_message_carries_the_model_in_a_few_parts(tmp_path: Path) -> None:
    job = FederationJob()
    torch.manual_seed(0)
    state = build_model(job.model, 1, 2, (32, 32), dp_enabled=True).state_dict()
    start = [t.numpy().copy() for t in state.values()]
    strategy = DeltaFedAvg(
        job, state, RunRecorder(tmp_path, 1), RoundHooks(checkpoint=lambda *_: None), 2
    )
    sent = strategy.sent_model()
    assert _parts(sent) <= 5  # records, one array, one chunk: whatever the model's depth
    assert _parts(ndarrays_to_parameters(start)) >= 2 * len(start)  # one array per tensor
    assert all(np.array_equal(a, b) for a, b in zip(model_sent(sent, start), start, strict=True))


def test_a_batch_norm_model_keeps_its_int64_counters_through_a_round(tmp_path: Path) -> None:
    """0-d tensors (batch norm's counters) stay arrays: the next model is packed and loads."""
    job = FederationJob.model_validate(
        {"model": {"norm": "batch"}, "privacy": {"enabled": False},
         "secure_aggregation": {"enabled": False}}
    )  # fmt: skip
    state = build_model(job.model, 1, 2, (32, 32), dp_enabled=False).state_dict()
    start = [t.numpy().copy() for t in state.values()]
    strategy = DeltaFedAvg(
        job, state, RunRecorder(tmp_path, 1), RoundHooks(checkpoint=lambda *_: None), 2
    )
    step = [np.full(a.shape, 1 if a.dtype == np.int64 else 0.001, np.float32) for a in start]
    replies = [fit_reply(1, step), fit_reply(2, step)]
    strategy._sampled = [proxy.node_id for proxy, _ in replies]
    sent, _ = strategy.aggregate_fit(1, replies, [])
    assert strategy.recorder.rejections == []
    after = model_sent(sent, start)
    assert [(a.shape, a.dtype) for a in after] == [(a.shape, a.dtype) for a in start]
    counters = [a for a in after if a.dtype == np.int64]
    assert counters and all(int(c) == 1 for c in counters)  # 0 + the mean step, still int64
    model = build_model(job.model, 1, 2, (32, 32), dp_enabled=False)
    model.load_state_dict(strategy.global_state())  # what the run's checkpoint and evaluation use
