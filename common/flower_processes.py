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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "QUIET_OFFLINE_ENV",
    "flower_command",
    "flower_environment",
    "free_port",
    "free_ports",
    "signal_group",
    "start_logged",
    "stop_process",
    "stop_session",
    "stream_to_log",
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


def stream_to_log(
    command: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    log_file: Path,
    echo: Callable[[str], None],
    keep: Callable[[str], bool] = lambda _line: True,
) -> int:
    """Run ``command`` (e.g. `flwr run --stream`); its exit code.

    Each output line that ``keep`` accepts is appended to ``log_file`` (flushed: the log is
    readable while the job runs) and passed to ``echo``. Interrupted (Ctrl-C), the command is
    terminated rather than left streaming.
    """
    with log_file.open("a", encoding="utf-8") as log:
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        try:
            for line in process.stdout:
                if keep(line):
                    log.write(line)
                    log.flush()
                    echo(line)
            return process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


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


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now: each is held until all are found.

    Ports probed one after another can repeat (the first is released before the second is
    asked for): a coordinator once got its Fleet and Control API on one port and failed.
    """
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    return free_ports(1)[0]


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


def _parents() -> dict[int, int]:
    """Parent pid of every process, by pid (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _sessions_under(pid: int) -> set[int]:
    """The sessions of ``pid`` and of all its descendants."""
    parents = _parents()
    found, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.update(children)
        frontier += children
    sessions = set()
    for member in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            sessions.add(os.getsid(member))
    return sessions - {os.getsid(0)}


def _members(sessions: set[int]) -> list[int]:
    members = []
    for candidate in _parents():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getsid(candidate) in sessions:
                members.append(candidate)
    return members


def stop_session(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Stop ``process`` (started with :func:`start_logged`) and everything it started.

    Flower's SuperLink starts SuperExec, and SuperExec the simulation runtime in a session of
    its own, which starts Ray: stopping the SuperLink's process group alone would leave those
    running, so every session below the SuperLink is stopped, SIGTERM first, then SIGKILL.
    """
    sessions = _sessions_under(process.pid) if process.poll() is None else {process.pid}
    stop_process(process, timeout_s)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in _members(sessions):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + timeout_s
        while _members(sessions) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _members(sessions):
            return
