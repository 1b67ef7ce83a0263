"""The coordinator sends the global model in a few message parts; a site gets it back exactly."""

from pathlib import Path

import numpy as np
import torch
from flwr.common import FitIns, Parameters, ndarrays_to_parameters
from flwr.compat.common.recorddict_compat import fitins_to_recorddict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from site_replies import model_sent

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
