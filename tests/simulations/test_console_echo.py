"""What `medfed-sim run` shows of the job's log: each sites' repeated warning once, with a
count at the end; every line with --verbose (lines as `flwr run --stream` printed them)."""

import logging
from pathlib import Path

import pytest

from simulations.simulation_engine import _Echo

_LINES = [
    "(ClientAppActor pid=27707) 11/29/2026 15:52:26:WARNING:the data has no patient keys",
    "(ClientAppActor pid=27703) 11/29/2026 15:52:33:WARNING:the data has no patient keys",
    "\x1b[92mINFO \x1b[0m:      round 1/1 | global test: roc_auc=0.676",
    "(ClientAppActor pid=27707) 11/29/2026 15:52:54:WARNING:the data has no patient keys",
    "\x1b[92mINFO \x1b[0m:      [ROUND 1]",
]


def _shown(verbose: bool, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    echo = _Echo(verbose)
    with caplog.at_level(logging.INFO, logger="simulations.simulation_engine"):
        for line in _LINES:
            echo(line)
        echo.summarise(Path("run.log"))
    return [record.getMessage() for record in caplog.records]


def test_a_repeated_site_warning_is_shown_once_then_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shown = _shown(False, caplog)
    assert sum("no patient keys" in line for line in shown) == 2  # once, then the count
    assert shown[-1].startswith("3 times in all") and "run.log" in shown[-1]
    assert any("round 1/1" in line for line in shown)
    assert not any("[ROUND 1]" in line for line in shown)
    assert len(_shown(True, caplog)) == len(_LINES)
