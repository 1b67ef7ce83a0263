"""`medfed-site start`: run this hospital's site node until stopped."""

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from client.site_node import SiteKit, start_site_node
from common.cli_support import configure_logging, user_errors
from common.cli_values import check_output_folder
from common.flower_processes import signal_group, stop_process

__all__ = ["start"]

logger = logging.getLogger(__name__)


def start(
    kit: Annotated[Path, typer.Option(help="This site's startup kit (from the coordinator).")],
    data: Annotated[Path, typer.Option(help="Cache written by `medfed-site prepare`.")],
    port: Annotated[int, typer.Option(help="Loopback port for the node's app runtime.")] = 9094,
    logs: Annotated[Path, typer.Option(help="Folder of the node's log files.")] = Path("site-logs"),
    state: Annotated[
        Path, typer.Option(help="The site's records: privacy ledger and audit trail.")
    ] = Path("site-state"),
    insecure: Annotated[
        bool, typer.Option(help="No TLS or key: only with a coordinator on this machine.")
    ] = False,
    superlink: Annotated[
        str | None, typer.Option(help="Override the kit's coordinator address (testing).")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CPU threads each training or evaluation may use (default: one per core); "
            "lower it on a machine shared with other services.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Connect to the coordinator and train when it asks; Ctrl-C or SIGTERM stops the node."""
    configure_logging(verbose)
    with user_errors():
        site = SiteKit.read(kit)
        check_output_folder("--logs", logs)
        check_output_folder("--state", state)
        if insecure:
            logger.warning("INSECURE: no TLS and no site key. Never use this with patient data.")
        node = start_site_node(
            site, data, port, logs / "supernode.log", insecure, superlink, state, threads
        )
    logger.info(
        "site %s: node pid %d connecting to %s; budget epsilon <= %g; log %s",
        site.name,
        node.pid,
        superlink or site.superlink,
        site.max_epsilon,
        logs / "supernode.log",
    )
    signal.signal(signal.SIGTERM, lambda *_: signal_group(node, signal.SIGTERM))
    try:
        code = node.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        stop_process(node)
    logger.info("site node stopped (exit %s)", code)
    raise typer.Exit(code if code and code > 0 else 0)
