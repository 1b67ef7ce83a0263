"""ClientApp processes forked from a warm parent: a message's process starts with its imports done.

flwr 1.41's SuperExec starts ``flwr-clientapp`` cold for every message: about 1.5 s of CPU for
Flower's imports, and 5-6 s more for torch, MONAI and Opacus when the message trains or
evaluates. A SecAgg+ round sends each site four messages and an evaluation. The site's
SuperExec instead hands each launch to a warm parent, started once with those imports done
and nothing else run (no torch operation, no network connection), which forks one child per
message. The child runs Flower's own ``flwr-clientapp`` entry point with the arguments Flower
chose, so every message still runs in a fresh process of its own that exits after it; only
the imports are shared, copy-on-write. Before it exits, the child runs what its message
deferred until its reply had left (client/after_reply.py).
"""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import IO

__all__ = ["CLIENTAPP_COMMAND", "CLIENTAPP_RUNTIME", "PRELOADED", "WarmParent", "cold_launch"]

logger = logging.getLogger(__name__)

#: The command flwr 1.41's SuperExec starts for a ClientApp message.
CLIENTAPP_COMMAND = "flwr-clientapp"
#: Flower's ClientApp runtime, and httpcore, which its HTTP client to the SuperNode imports on
#: creation (0.4-0.6 s of CPU in every message's process when not preloaded).
CLIENTAPP_RUNTIME = ("flwr.supernode.cli", "httpcore")
#: Imported once by the warm parent: the runtime, medfed's ClientApp and training client
#: (torch, MONAI, Opacus), and torch._dynamo, which the first optimizer imports.
PRELOADED = (*CLIENTAPP_RUNTIME, "client.client_app", "client.site_client", "torch._dynamo")


class WarmParent:
    """A forked process that imports :data:`PRELOADED` and forks a ClientApp per launch."""

    def __init__(self, preload: Sequence[str] = PRELOADED) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the warm parent
            os.close(write_fd)
            _serve(read_fd, preload)
        os.close(read_fd)
        self.pid = pid
        self._requests: IO[str] = os.fdopen(write_fd, "w", encoding="utf-8")

    def launch(self, args: Sequence[str], quiet: bool = False) -> bool:
        """Ask for a ClientApp process running ``args``; False if the warm parent is gone."""
        try:
            self._requests.write(json.dumps({"args": list(args), "quiet": quiet}) + "\n")
            self._requests.flush()
        except (BrokenPipeError, ValueError):
            return False
        return True

    def close(self) -> None:
        """End the warm parent (children already forked run to their end)."""
        with contextlib.suppress(BrokenPipeError):
            self._requests.close()
        os.waitpid(self.pid, 0)


def _serve(read_fd: int, preload: Sequence[str]) -> None:
    """The warm parent's life: import, then fork a child per request until the pipe closes."""
    code = 0
    try:
        import importlib  # noqa: PLC0415

        for module in preload:
            importlib.import_module(module)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
        with os.fdopen(read_fd, encoding="utf-8") as requests:
            for line in requests:
                request = json.loads(line)
                if os.fork() == 0:
                    os.close(read_fd)
                    _run_clientapp(request["args"], bool(request["quiet"]))
    except BaseException:
        logger.exception("the warm ClientApp parent stopped")
        code = 1
    finally:
        os._exit(code)


def _run_clientapp(args: list[str], quiet: bool) -> None:
    """In a forked child: run Flower's ClientApp entry point with ``args``, then exit."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the ClientApp may wait for its children
        if quiet:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            sys.stdout = sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
        from flwr.supernode.cli import flwr_clientapp  # noqa: PLC0415 (preloaded)

        from client.after_reply import accept_deferred_work, run_deferred_work  # noqa: PLC0415

        sys.argv = [CLIENTAPP_COMMAND, *args[1:]]
        accept_deferred_work()
        try:
            flwr_clientapp()
            code = 0
        except SystemExit as exit_:  # Flower's runtime exits once the reply has left
            code = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
        run_deferred_work()
    except BaseException:
        logger.exception("a warm ClientApp process failed")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def cold_launch(args: Sequence[str], quiet: bool) -> None:
    """Start ``args`` as Flower does, when no warm parent can."""
    output = subprocess.DEVNULL if quiet else None
    subprocess.Popen(list(args), stdout=output, stderr=output)  # noqa: S603
