"""Suite-wide ordering: the end-to-end modules (real Flower processes) are collected first.

`make test` runs the suite on two workers, one test file each at a time, in this order (`pytest
-n 2 --dist loadfile --no-loadscope-reorder`): the deployment files (the longest) first, then
the other end-to-end files, so that the short unit tests fill the gaps at the end instead of
one worker idling while the other finishes a federation.
"""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def cost_rank(item: pytest.Item) -> tuple[bool, bool]:
        return item.get_closest_marker("e2e") is None, "deployment" not in item.path.parts

    items.sort(key=cost_rank)  # stable: file order kept within a rank
