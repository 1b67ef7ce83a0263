"""Each site that fails a round is recorded once, with its own reason: an error reply under
SecAgg+ (which Flower's workflow keeps without its sender) is not given to a silent site."""

from pathlib import Path

import numpy as np
import torch
from flwr.common import Error, Parameters
from flwr.server.client_manager import SimpleClientManager
from site_replies import SiteProxy, fit_reply

from common.federation_job import FederationJob
from common.models import build_model
from server.run_recorder import RunRecorder
from server.strategies import DeltaFedAvg, RoundHooks

REFUSAL = "ClientAppException: hospital-b refuses this round: epsilon 9.47 above its limit 9"


def _strategy(tmp_path: Path) -> tuple[DeltaFedAvg, list[np.ndarray]]:
    job = FederationJob(secure_aggregation={"enabled": False})
    torch.manual_seed(0)
    state = build_model(job.model, 1, 2, (16, 16), dp_enabled=True).state_dict()
    strategy = DeltaFedAvg(
        job, state, RunRecorder(tmp_path, 1), RoundHooks(checkpoint=lambda *_: None), 1
    )
    sites = SimpleClientManager()
    for node in (1, 2, 3):
        proxy = SiteProxy(str(node))
        proxy.node_id = node
        sites.register(proxy)
    strategy.configure_fit(1, Parameters([], ""), sites)
    return strategy, [np.zeros_like(array) for array in strategy.global_arrays]


def test_an_error_reply_is_its_sites_and_a_silent_site_has_no_reply(tmp_path: Path) -> None:
    strategy, zero = _strategy(tmp_path)
    strategy.fail_reply(2, REFUSAL)  # SecAgg+'s setup stage: site 2 refuses; site 3 is killed
    # what Flower's SecAgg+ workflow then hands the strategy: the error, without its sender
    strategy.aggregate_fit(1, [fit_reply(1, zero)], [Exception(Error(0, REFUSAL))])
    failures = {(f["round"], f["node_id"]): f["reason"] for f in strategy.recorder.failures}
    assert failures == {(1, 2): REFUSAL, (1, 3): "no reply"}


def test_a_round_halted_after_every_error_still_names_each_site(tmp_path: Path) -> None:
    strategy, _ = _strategy(tmp_path)
    for node in (1, 2, 3):  # too few sites left: Flower halts without aggregate_fit
        strategy.fail_reply(node, f"ConfigError: privacy.target_epsilon: site {node}")
    strategy.fail_reply(2, "a second stage's error")  # recorded once
    reasons = [(f["node_id"], f["reason"]) for f in strategy.recorder.failures]
    assert reasons == [(n, f"ConfigError: privacy.target_epsilon: site {n}") for n in (1, 2, 3)]
