"""Suite-wide ordering: the end-to-end modules (real Flower processes) are collected first.

`make test` runs the suite on two workers, one test file each at a time, in this order (`pytest
-n 2 --dist loadfile --no-loadscope-reorder`): the deployment files first, longest first (their
`e2e` mark's ``idle_s``: about how long the file takes on an idle machine), then the other
end-to-end files, so that the short unit tests fill the gaps at the end instead of one worker
idling while another finishes a federation. Longest first matters because pytest-xdist hands
a worker its next file early, as soon as two or fewer of its tests are left: a short file
queued behind a long one costs less than a long one queued behind another.

Every Flower SuperExec the suite starts (under a SuperLink or a SuperNode) polls for its next
task every :data:`SUPEREXEC_POLL_S` seconds instead of Flower's default 1 s: each message a
site answers and each job started waits on that poll (a user's processes keep the default).

Every simulation's private Ray gets one CPU (:data:`simulations.simulation_engine.RAY_CPUS_ENV`),
so one actor trains its sites in turn: two workers run two simulations at a time on two cores,
and a second actor per simulation would only import the site's code once more (about 5 s CPU).
"""

import os

import pytest

from simulations.simulation_engine import RAY_CPUS_ENV

#: Flower's SuperExec poll interval (flwr reads FLWR_SUPEREXEC_TASK_POLL_INTERVAL, 0.01-60 s).
SUPEREXEC_POLL_S = "0.2"
#: CPUs of each simulation's private Ray in the suite.
SIMULATION_RAY_CPUS = "1"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", SUPEREXEC_POLL_S)
    os.environ.setdefault(RAY_CPUS_ENV, SIMULATION_RAY_CPUS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def cost_rank(item: pytest.Item) -> tuple[bool, bool, float]:
        e2e = item.get_closest_marker("e2e")
        idle_s = 0.0 if e2e is None else float(e2e.kwargs.get("idle_s", 0.0))
        return e2e is None, "deployment" not in item.path.parts, -idle_s

    items.sort(key=cost_rank)  # stable: file order kept within a rank
