"""`medfed-server start`: the coordinator's SuperLink, enrolled sites and Fleet gateway."""

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from common.cli_support import configure_logging, exit_on_signal, user_errors
from common.cli_values import check_output_folder
from common.flower_processes import stop_process
from server.commands.options import DEFAULT_STATE, StateOption, VerboseOption
from server.coordinator import (
    CoordinatorPaths,
    CoordinatorSettings,
    enrol_sites,
    launch_superlink,
    write_flwr_config,
    write_info,
)
from server.fleet_gateway import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_BURST,
    DEFAULT_REQUESTS_PER_S,
    create_fleet_gateway,
    serve_fleet_gateway,
)
from server.provisioning import KitPaths
from server.rate_limit import PeerRateLimit

__all__ = ["start"]

logger = logging.getLogger(__name__)


def _stop_if_superlink_dies(superlink: subprocess.Popen[bytes], log: Path) -> threading.Event:
    """Stop this process if the SuperLink exits on its own, rather than serve a dead gateway.

    Set the returned event before stopping the SuperLink deliberately.
    """
    stopping = threading.Event()

    def watch() -> None:
        code = superlink.wait()
        if not stopping.is_set():
            logger.error("SuperLink exited (code %s); stopping. See %s", code, log)
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="superlink-watch", daemon=True).start()
    return stopping


def start(
    kits: Annotated[Path, typer.Option(help="Folder written by `medfed-server provision`.")],
    state: StateOption = DEFAULT_STATE,
    host: Annotated[str, typer.Option(help="Address the Fleet gateway listens on.")] = "0.0.0.0",
    fleet_port: Annotated[
        int, typer.Option(help="Port sites connect to (outbound for them).")
    ] = 9092,
    control_port: Annotated[
        int, typer.Option(help="Loopback-only port of the SuperLink (Control API).")
    ] = 9093,
    insecure: Annotated[
        bool, typer.Option(help="No TLS, no site authentication: local testing on 127.0.0.1 only.")
    ] = False,
    max_body_mib: Annotated[
        float,
        typer.Option(
            min=0.001, help="Largest request the gateway accepts (MiB); larger ones get 413."
        ),
    ] = DEFAULT_MAX_BODY_BYTES / 2**20,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Connections the gateway serves at once; more get 503.")
    ] = DEFAULT_MAX_CONNECTIONS,
    max_requests_per_s: Annotated[
        float,
        typer.Option(min=0.001, help="Requests per second per peer address; more get 429."),
    ] = DEFAULT_REQUESTS_PER_S,
    request_burst: Annotated[
        float, typer.Option(min=1, help="Requests a peer address may send in one burst.")
    ] = DEFAULT_REQUEST_BURST,
    verbose: VerboseOption = False,
) -> None:
    """Run the coordinator until interrupted (Ctrl-C or SIGTERM stops every process it started)."""
    configure_logging(verbose)
    settings = CoordinatorSettings(kits, state, host, fleet_port, control_port, insecure)
    paths = CoordinatorPaths(state)
    coordinator_kit = KitPaths(settings.kits).coordinator
    with user_errors():
        settings.check()
        if insecure:
            logger.warning(
                "INSECURE: no TLS and no site authentication; any process on this machine can "
                "join. Never use this with real data."
            )
        check_output_folder("--state", paths.state)
        paths.state.mkdir(parents=True, exist_ok=True)
        write_flwr_config(paths, control_port, None if insecure else coordinator_kit / "ca.crt")
        superlink = launch_superlink(settings, paths)
    stopping: threading.Event | None = None
    try:
        with user_errors():
            if not insecure:
                added = enrol_sites(paths, settings.kits)
                logger.info("enrolled sites: %s", ", ".join(added) or "none new")
            write_info(settings, paths, superlink.pid)
        scheme = "http" if insecure else "https"
        gateway = create_fleet_gateway(
            f"{scheme}://127.0.0.1:{control_port}",
            verify=False if insecure else str(coordinator_kit / "ca.crt"),
            traffic_log=paths.logs / "fleet-traffic.csv",
            max_body_bytes=int(max_body_mib * 2**20),
            rate_limit=PeerRateLimit(max_requests_per_s, request_burst),
        )
        logger.info(
            "coordinator up: sites connect to %s:%d; Control API on 127.0.0.1:%d only",
            host,
            fleet_port,
            control_port,
        )
        tls: dict[str, Any] = (  # uvicorn.run's TLS keyword arguments
            {}
            if insecure
            else {
                "ssl_certfile": str(coordinator_kit / "server.crt"),
                "ssl_keyfile": str(coordinator_kit / "server.key"),
            }
        )
        # uvicorn re-raises SIGTERM after its graceful shutdown; turning it into SystemExit
        # lets the `finally` below stop the SuperLink instead of dying with it still running.
        signal.signal(signal.SIGTERM, exit_on_signal)
        stopping = _stop_if_superlink_dies(superlink, paths.logs / "superlink.log")
        serve_fleet_gateway(gateway, host, fleet_port, max_connections, **tls)
    finally:
        if stopping is not None:
            stopping.set()
        stop_process(superlink)
        paths.info.unlink(missing_ok=True)
        logger.info("coordinator stopped")
