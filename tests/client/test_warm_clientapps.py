"""The warm parent forks a fresh ClientApp process per launch, with Flower's own entry point."""

import os
import signal
import subprocess
import sys
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


def test_a_clientapp_reaches_its_supernode_without_importing_anything() -> None:
    """Flower's ClientApp process creates its HTTP client to the SuperNode on start; every
    module that needs is already in the warm parent (httpcore alone cost 0.4-0.6 s of CPU in
    each message's process)."""
    probe = (
        "import importlib, sys\n"
        "from client.warm_clientapps import CLIENTAPP_RUNTIME\n"
        "for module in CLIENTAPP_RUNTIME: importlib.import_module(module)\n"
        "before = set(sys.modules)\n"
        "from flwr.supernode.runtime.run_clientapp import run_clientapp\n"
        "from flwr.supercore.runtime.runtime_http_client import RuntimeHttpClient\n"
        "RuntimeHttpClient.from_server_address('127.0.0.1:9094', True, None, []).close()\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
