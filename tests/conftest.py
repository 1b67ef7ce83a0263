"""Suite-wide ordering: the end-to-end modules (real Flower processes) are collected first.

`make test` runs the suite on two workers, one test file each at a time (`pytest -n 2 --dist
loadfile`); starting the long end-to-end files first lets the short unit tests fill the gaps
instead of leaving one worker idle while the other finishes a federation.
"""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)  # stable: file order kept
