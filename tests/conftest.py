"""Suite-wide ordering: the end-to-end modules (real Flower processes) are collected first.

`make test` runs the suite on two workers, one test file each at a time, in this order (`pytest
-n 2 --dist loadfile --no-loadscope-reorder`): the deployment files, longest first (their
`e2e` mark's ``idle_s``: about how long the file takes on an idle machine), each followed by
:data:`SIMULATIONS_BETWEEN` other end-to-end files, then the unit tests. A federation on real
processes mostly waits (polls, process starts) while a simulation keeps its core busy, so
the other worker runs simulations beside each federation instead of a second federation; the
short unit tests fill the gaps at the end instead of one worker idling while another
finishes a federation. pytest-xdist hands a worker its next file as soon as two or fewer of
its tests are left.

Every Flower SuperExec the suite starts (under a SuperLink or a SuperNode) polls for its next
task every :data:`SUPEREXEC_POLL_S` seconds instead of Flower's default 1 s: each message a
site answers and each job started waits on that poll (a user's processes keep the default).

Every process of the suite runs torch's operations on one thread (:data:`TORCH_THREADS`):
two workers share two cores, and a federation runs several sites on this one machine, so
torch's default (a thread per core in every process) only oversubscribed the cores. A
3-site SecAgg+ bench used 78-86 s of CPU instead of 81-91 s with one thread per process
(docs/results.md).

Every simulation's private Ray gets one CPU (:data:`simulations.simulation_engine.RAY_CPUS_ENV`),
so one actor trains its sites in turn: two workers run two simulations at a time on two cores,
and a second actor per simulation would only import the site's code once more (about 5 s CPU).
"""

import os
import sys

import pytest

from client.site_node import TORCH_THREADS_ENV
from simulations.simulation_engine import RAY_CPUS_ENV

#: Flower's SuperExec poll interval (flwr reads FLWR_SUPEREXEC_TASK_POLL_INTERVAL, 0.01-60 s).
SUPEREXEC_POLL_S = "0.2"
#: CPUs of each simulation's private Ray in the suite.
SIMULATION_RAY_CPUS = "1"
#: torch's intra-op threads in every process of the suite (the variable `medfed-site start
#: --threads` sets).
TORCH_THREADS = "1"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", SUPEREXEC_POLL_S)
    os.environ.setdefault(RAY_CPUS_ENV, SIMULATION_RAY_CPUS)
    os.environ.setdefault(TORCH_THREADS_ENV, TORCH_THREADS)
    # torch reads the variable when it is imported; a plugin may have imported it already.
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ[TORCH_THREADS_ENV]))


#: End-to-end files (simulations mostly) queued after each deployment file.
SIMULATIONS_BETWEEN = 6


def _idle_s(item: pytest.Item) -> float:
    e2e = item.get_closest_marker("e2e")
    return 0.0 if e2e is None else float(e2e.kwargs.get("idle_s", 0.0))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    files: dict[object, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.path, []).append(item)
    groups = sorted(files.values(), key=lambda group: -_idle_s(group[0]))  # stable
    deployment = [g for g in groups if "deployment" in g[0].path.parts]
    e2e = [g for g in groups if g not in deployment and any(i.get_closest_marker("e2e") for i in g)]
    unit = [g for g in groups if g not in deployment and g not in e2e]
    ordered: list[list[pytest.Item]] = []
    for group in deployment:
        ordered += [group, *e2e[:SIMULATIONS_BETWEEN]]
        del e2e[:SIMULATIONS_BETWEEN]
    items[:] = [item for group in [*ordered, *e2e, *unit] for item in group]
