"""Suite-wide ordering: the end-to-end modules (real Flower processes) are collected first.

`make test` runs the suite on four workers, one test file each at a time, in this order (`pytest
-n 4 --dist loadfile --no-loadscope-reorder`): the deployment files (the longest) first, then
the other end-to-end files, so that the short unit tests fill the gaps at the end instead of
one worker idling while another finishes a federation. Four workers on two cores: an
end-to-end test spends about half its time waiting (Flower's polls and sleeps, process starts),
and a file is the unit of work, so a long module is split into files that each start their
own federation (tests/deployment).

Every Flower SuperExec the suite starts (under a SuperLink or a SuperNode) polls for its next
task every :data:`SUPEREXEC_POLL_S` seconds instead of Flower's default 1 s: each message a
site answers and each job started waits on that poll (a user's processes keep the default).
"""

import os

import pytest

#: Flower's SuperExec poll interval (flwr reads FLWR_SUPEREXEC_TASK_POLL_INTERVAL, 0.01-60 s).
SUPEREXEC_POLL_S = "0.2"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", SUPEREXEC_POLL_S)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def cost_rank(item: pytest.Item) -> tuple[bool, bool]:
        return item.get_closest_marker("e2e") is None, "deployment" not in item.path.parts

    items.sort(key=cost_rank)  # stable: file order kept within a rank
