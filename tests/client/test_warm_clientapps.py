"""The warm parent forks a fresh ClientApp process per launch, with Flower's own entry point."""

import os
import signal
import time

import pytest

from client.warm_clientapps import WarmParent

LIGHT = ("flwr.supernode.cli",)  # the real ClientApp entry point, without torch


def _output_until(capfd: pytest.CaptureFixture[str], text: str, bound_s: float = 120.0) -> str:
    seen = ""
    deadline = time.monotonic() + bound_s
    while text not in seen and time.monotonic() < deadline:
        time.sleep(0.2)
        seen += capfd.readouterr().out
    return seen


def test_each_launch_runs_flowers_clientapp_in_a_child_of_the_warm_parent(
    capfd: pytest.CaptureFixture[str],
) -> None:
    parent = WarmParent(preload=LIGHT)
    try:
        assert parent.launch(["flwr-clientapp", "--help"], quiet=True)
        assert parent.launch(["flwr-clientapp", "--help"])
        output = _output_until(capfd, "--runtime-api-address")
        # Flower's own parser answered once: the quiet launch printed nothing.
        assert output.count("usage: flwr-clientapp") == 1, output
    finally:
        parent.close()
    with pytest.raises(ChildProcessError):  # closed and reaped
        os.waitpid(parent.pid, os.WNOHANG)


def test_a_launch_after_the_warm_parent_died_says_so() -> None:
    parent = WarmParent(preload=LIGHT)
    os.kill(parent.pid, signal.SIGKILL)
    os.waitpid(parent.pid, 0)
    assert not parent.launch(["flwr-clientapp", "--help"])  # the SuperExec then starts it cold
