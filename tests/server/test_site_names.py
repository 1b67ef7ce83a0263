"""A site is recorded under the name it was enrolled with, whatever name its replies give.

On a federation the SuperLink ties each node to the key it authenticates with and to the name
the coordinator enrolled it under; a hostile site claiming another hospital's name in its
metrics must not get that hospital blamed for its refused update.
"""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.common import Parameters
from flwr.server.client_manager import SimpleClientManager
from site_replies import SiteProxy, fit_reply

from common.federation_job import FederationJob
from common.models import build_model
from server.run_recorder import RunRecorder
from server.strategies import DeltaFedAvg, RoundHooks

ENROLLED = {1: "hospital-a", 2: "hospital-b", 3: "hospital-c"}


class _SuperLinkNames:
    """The enrolled names as the ServerApp reads them, counting the reads."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names, self.reads = names, 0

    def __call__(self) -> dict[int, str]:
        self.reads += 1
        return dict(self.names)


def _sites() -> SimpleClientManager:
    sites = SimpleClientManager()
    for node in ENROLLED:
        proxy = SiteProxy(str(node))
        proxy.node_id = node
        sites.register(proxy)
    return sites


def _strategy(tmp_path: Path, names: _SuperLinkNames | None) -> tuple[DeltaFedAvg, list]:
    job = FederationJob(secure_aggregation={"enabled": False})
    torch.manual_seed(0)
    state = build_model(job.model, 1, 2, (16, 16), dp_enabled=True).state_dict()
    hooks = RoundHooks(checkpoint=lambda *_: None, enrolled_names=names)
    strategy = DeltaFedAvg(job, state, RunRecorder(tmp_path, 2), hooks, 1)
    strategy.configure_fit(1, Parameters([], ""), _sites())
    return strategy, [np.zeros_like(array) for array in strategy.global_arrays]


def test_a_site_claiming_another_hospitals_name_is_recorded_under_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names = _SuperLinkNames(ENROLLED)
    strategy, zero = _strategy(tmp_path, names)
    poisoned = [np.full_like(array, np.nan) for array in zero]
    replies = [
        fit_reply(1, zero, name="hospital-a"),
        fit_reply(2, zero, name="hospital-b"),
        fit_reply(3, poisoned, name="hospital-a"),  # hospital-c, passing for hospital-a
    ]
    with caplog.at_level(logging.WARNING, logger="server.strategies"):
        strategy.aggregate_fit(1, replies, [])
    recorder = strategy.recorder
    assert [(r["node_id"], r["site"]) for r in recorder.rejections] == [(3, "hospital-c")]
    assert "non-finite" in recorder.rejections[0]["reason"]
    assert [(s["node_id"], s["site"]) for s in recorder.sites] == list(ENROLLED.items())
    assert "node 3, enrolled as hospital-c, names itself 'hospital-a'" in caplog.text
    assert names.reads == 1  # once for the round, not once per reply


def test_a_node_enrolled_after_the_names_were_read_is_looked_up_in_the_next_round(
    tmp_path: Path,
) -> None:
    names = _SuperLinkNames({1: "hospital-a"})
    strategy, zero = _strategy(tmp_path, names)
    strategy.aggregate_fit(1, [fit_reply(1, zero, name="hospital-a")], [])
    names.names[4] = "hospital-d"  # enrolled while the job runs
    strategy.fail_reply(4, "its refusal")  # unknown this round: the names were read already
    strategy.configure_fit(2, Parameters([], ""), _sites())
    strategy.fail_reply(4, "its refusal")
    named = [f["site"] for f in strategy.recorder.failures if f["node_id"] == 4]
    assert named == ["node 4", "hospital-d"]
    assert names.reads == 2


def test_in_a_simulation_sites_keep_the_names_they_give(tmp_path: Path) -> None:
    strategy, zero = _strategy(tmp_path, None)  # no SuperLink names: simulated sites
    strategy.aggregate_fit(1, [fit_reply(1, zero, name="site-0")], [])
    strategy.fail_reply(1, "a later error")
    assert strategy.recorder.sites[0]["site"] == "site-0"
    assert [f["site"] for f in strategy.recorder.failures if f["node_id"] == 1] == ["site-0"]
