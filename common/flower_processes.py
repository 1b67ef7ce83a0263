"""How medfed starts Flower's processes: quiet, offline, and stopped by PID.

Every Flower process medfed launches gets telemetry off and runtime dependency installation
off (Flower otherwise reports usage and ``uv sync``s each app's dependencies at run time).
"""

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "QUIET_OFFLINE_ENV",
    "flower_command",
    "flower_environment",
    "signal_group",
    "start_logged",
    "stop_process",
    "wait_for_port",
]

logger = logging.getLogger(__name__)

#: Environment forced on every Flower process medfed starts.
QUIET_OFFLINE_ENV: Mapping[str, str] = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


def flower_command(name: str) -> str:
    """Path of a Flower executable installed beside this Python (the same environment)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def flower_environment(flwr_home: Path | None = None) -> dict[str, str]:
    """This process's environment with :data:`QUIET_OFFLINE_ENV` and ``FLWR_HOME`` applied."""
    env = {**os.environ, **QUIET_OFFLINE_ENV}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def start_logged(
    command: Sequence[str], log_file: Path, env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own process group, stdout and stderr appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    logger.debug("started pid %d: %s (log %s)", process.pid, command[0], log_file)
    return process


def signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to the process group of ``process`` if it is still running."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM the process group (the process and the apps it spawned), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


def wait_for_port(
    host: str, port: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> bool:
    """True once ``host:port`` accepts connections; False on timeout or if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.2)
    return False
