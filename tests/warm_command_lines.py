"""medfed's command lines run in processes of their own that start with their imports done.

A cold `medfed-site prepare` or `medfed-sim run` spends 3.5-5 s of CPU importing torch, MONAI
and Opacus before it reads its first argument; the suite runs such commands about sixty times.
:func:`run_command_line` instead asks a warm server (one per pytest worker, started on first
use) to fork a child: the child sets the caller's working directory and environment, sends its
stdout and stderr to files, runs the program's own Typer app (the function its console script
calls) with the arguments, and exits with its exit code. Every command still runs in a process
of its own, as a user's would; only the interpreter's start-up and imports are shared,
copy-on-write, as a site's warm ClientApp parent shares them (client/warm_clientapps.py).

What a fork cannot show stays with cold processes: the console scripts themselves and
`--version`/`--help` (tests/server/test_server_cli.py), what a command prints while importing
(tests/client/test_quiet_logs.py), and signals sent to a running command (tests/simulations/
test_resume.py).
"""

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

__all__ = ["PROGRAMS", "run_command_line"]

#: Each program's console script (pyproject.toml's [project.scripts], as installed).
PROGRAMS = {
    script.name: script
    for script in distribution("medfed").entry_points
    if script.group == "console_scripts"
}
#: Imported once by the server: the programs and the command modules that load torch, MONAI
#: and Opacus (each program imports a command's module only when the command runs).
PRELOADED = (
    *(script.module for script in PROGRAMS.values()),
    "client.commands.prepare",
    "client.commands.check",
    "client.commands.records",
    "simulations.commands.run",
    "simulations.commands.audit_privacy",
    "simulations.commands.pretrain",
    "server.commands.run",
    "torch._dynamo",
)


def _serve(requests_fd: int, replies_fd: int) -> None:
    """The warm server: import, then fork and wait for one child per request, in turn."""
    import importlib

    for module in PRELOADED:
        importlib.import_module(module)
    replies = os.fdopen(replies_fd, "w", encoding="utf-8")
    with os.fdopen(requests_fd, encoding="utf-8") as requests:
        for line in requests:
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                os.close(requests_fd)
                os.close(replies_fd)
                _run_child(request)
            # As the child does, so that the group exists before the caller may signal it; a
            # child that has already ended (or set it) makes this fail harmlessly.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.setpgid(pid, pid)
            replies.write(json.dumps({"pid": pid}) + "\n")
            replies.flush()
            _, status = os.waitpid(pid, 0)
            replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
            replies.flush()


def _run_child(request: dict[str, Any]) -> None:
    """In the forked child: the caller's directory, environment and output files, then the app."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group: a timeout ends it with what it started
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.argv = [request["program"], *request["args"]]
        PROGRAMS[request["program"]].load()()  # its module is imported: the function
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)


class _WarmServer:
    """The server process of this pytest worker, and the pipes to it."""

    def __init__(self) -> None:
        requests_read, self._requests = os.pipe()
        self._replies, replies_write = os.pipe()
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # read per child
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(requests_read), str(replies_write)],
            pass_fds=(requests_read, replies_write),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        os.close(requests_read)
        os.close(replies_write)
        self._buffer = b""

    def _reply(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._replies], [], [], max(left, 0))
            if not ready:
                raise TimeoutError
            chunk = os.read(self._replies, 65536)
            if not chunk:
                raise RuntimeError(f"the warm command-line server {self.process.pid} ended")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def run(self, request: dict[str, Any], timeout: float) -> int:
        os.write(self._requests, (json.dumps(request) + "\n").encode())
        deadline = time.monotonic() + timeout
        pid = self._reply(time.monotonic() + 60)["pid"]
        try:
            return int(self._reply(deadline)["returncode"])
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):  # it has just ended
                os.killpg(pid, signal.SIGKILL)
            self._reply(time.monotonic() + 60)  # the server has reaped it
            raise

    def stop(self) -> None:
        os.close(self._requests)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._replies)


_server: _WarmServer | None = None


def _warm_server() -> _WarmServer:
    global _server  # one per pytest worker, started on first use
    if _server is None or _server.process.poll() is not None:
        _server = _WarmServer()
        atexit.register(_server.stop)
    return _server


def run_command_line(
    program: str,
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``program args`` (a key of :data:`PROGRAMS`) as ``subprocess.run`` would, output kept.

    Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds, the command's process group
    killed first.
    """
    argv: Sequence[str] = [str(arg) for arg in args]
    with tempfile.TemporaryDirectory(prefix="medfed-cli-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        request = {
            "program": program,
            "args": list(argv),
            "cwd": str(Path(cwd or os.getcwd()).resolve()),
            "env": dict(os.environ if env is None else env),
            "stdout": str(out),
            "stderr": str(err),
        }
        try:
            code = _warm_server().run(request, timeout)
        except TimeoutError:
            raise subprocess.TimeoutExpired([program, *argv], timeout) from None
        stdout = out.read_text(encoding="utf-8", errors="replace") if out.exists() else ""
        stderr = err.read_text(encoding="utf-8", errors="replace") if err.exists() else ""
    return subprocess.CompletedProcess([program, *argv], code, stdout, stderr)


if __name__ == "__main__":
    # Run as a script, this file's folder leads sys.path: its test folders (client/, server/
    # ...) must not be found in place of medfed's packages.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
    _serve(int(sys.argv[1]), int(sys.argv[2]))
