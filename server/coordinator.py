"""Run the coordinator: a SuperLink on loopback, the enrolled sites' keys, the Fleet gateway.

Design (docs/security.md): the SuperLink listens on 127.0.0.1 only, with TLS and SuperNode
authentication, so its Control API (start runs, enrol nodes) is reachable from the
coordinator's own machine and nowhere else. Sites reach the Fleet API through the gateway on
the public address, which forwards nothing but Fleet calls.
"""

import json
import logging
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from common.errors import ConfigError, MedfedError
from common.flower_processes import (
    flower_command,
    flower_environment,
    start_logged,
    stop_process,
    wait_for_port,
)
from server.provisioning import KitPaths
from server.superlink_process import NODE_REGISTRY_OPTION

__all__ = [
    "CONNECTION",
    "CoordinatorPaths",
    "CoordinatorSettings",
    "enrol_sites",
    "enrolled_sites",
    "online_sites",
    "launch_superlink",
    "write_flwr_config",
]

logger = logging.getLogger(__name__)

#: The name of the coordinator's connection in its private FLWR_HOME/config.toml.
CONNECTION = "medfed"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
#: What to do when the SuperLink's enrolled nodes cannot be read.
RE_ENROL = (
    "restore it from a backup; without one, move it and enrolled-sites.json away and start "
    "again: every site gets a new node ID and restarts its node"
)


@dataclass(frozen=True)
class CoordinatorPaths:
    """The coordinator's state folder: SuperLink database, Flower CLI home, logs and runs."""

    state: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", self.state.resolve())

    @property
    def flwr_home(self) -> Path:
        """FLWR_HOME of the coordinator's Flower CLI calls (never the user's home)."""
        return self.state / "flwr-home"

    @property
    def node_registry(self) -> Path:
        """The SuperLink's enrolled nodes (server/superlink_state.py); runs stay in memory."""
        return self.state / "superlink-nodes.json"

    @property
    def earlier_database(self) -> Path:
        """Flower's SQLite state, which coordinators before the node registry kept."""
        return self.state / "superlink.db"

    @property
    def logs(self) -> Path:
        """Log files of the processes the coordinator starts."""
        return self.state / "logs"

    @property
    def runs(self) -> Path:
        """One folder per job: generated app, metrics, checkpoints."""
        return self.state / "runs"

    @property
    def enrolled(self) -> Path:
        """Node ID -> site name of the enrolled sites (the SuperLink lists IDs only)."""
        return self.state / "enrolled-sites.json"

    @property
    def info(self) -> Path:
        """Addresses and PIDs of the running coordinator, for `status` and `run`."""
        return self.state / "coordinator.json"


@dataclass(frozen=True)
class CoordinatorSettings:
    """Where the coordinator listens."""

    kits: Path
    state: Path
    host: str = "0.0.0.0"
    fleet_port: int = 9092
    control_port: int = 9093
    insecure: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "kits", self.kits.resolve())
        object.__setattr__(self, "state", self.state.resolve())

    def check(self) -> None:
        """Refuse an insecure coordinator on anything but loopback."""
        if self.insecure and self.host not in LOOPBACK:
            raise ConfigError(
                "--insecure",
                f"refused on {self.host}: without TLS and site authentication the coordinator "
                "may only listen on 127.0.0.1 (local testing)",
            )
        if not self.insecure:
            kit = KitPaths(self.kits)
            for needed in ("server.crt", "server.key", "ca.crt"):
                if not (kit.coordinator / needed).is_file():
                    raise ConfigError(
                        str(kit.coordinator / needed),
                        "missing: run `medfed-server provision` first",
                    )


def write_flwr_config(paths: CoordinatorPaths, control_port: int, ca_cert: Path | None) -> Path:
    """The coordinator's Flower CLI connection to its own loopback SuperLink."""
    connection: dict[str, object] = {"address": f"127.0.0.1:{control_port}"}
    if ca_cert is None:
        connection["insecure"] = True
    else:
        connection["root-certificates"] = str(ca_cert.resolve())
    config = {"superlink": {"default": CONNECTION, CONNECTION: connection}}
    paths.flwr_home.mkdir(parents=True, exist_ok=True)
    path = paths.flwr_home / "config.toml"
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    return path


def superlink_command(settings: CoordinatorSettings, paths: CoordinatorPaths) -> list[str]:
    """flower-superlink bound to loopback; TLS and SuperNode authentication unless insecure."""
    command = [
        sys.executable,
        "-m",
        "server.superlink_process",
        NODE_REGISTRY_OPTION,
        str(paths.node_registry),
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.control_port),
        "--disable-runtime-dependency-installation",
    ]
    if settings.insecure:
        return [*command, "--insecure"]
    coordinator = KitPaths(settings.kits).coordinator
    return [
        *command,
        "--ssl-ca-certfile",
        str(coordinator / "ca.crt"),
        "--ssl-certfile",
        str(coordinator / "server.crt"),
        "--ssl-keyfile",
        str(coordinator / "server.key"),
        "--enable-supernode-auth",
    ]


def launch_superlink(
    settings: CoordinatorSettings, paths: CoordinatorPaths, timeout_s: float = 60.0
) -> subprocess.Popen[bytes]:
    """Start the SuperLink and wait until it accepts connections."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    prepare_node_registry(paths)
    process = start_logged(
        superlink_command(settings, paths),
        paths.logs / "superlink.log",
        flower_environment(paths.flwr_home),
        cwd=paths.state,
    )
    if not wait_for_port("127.0.0.1", settings.control_port, timeout_s, process):
        stop_process(process)
        raise MedfedError(
            f"SuperLink did not start on 127.0.0.1:{settings.control_port}; "
            f"see {paths.logs / 'superlink.log'}"
        )
    return process


def prepare_node_registry(paths: CoordinatorPaths) -> None:
    """Check the SuperLink's node registry reads, before the SuperLink starts on it.

    A coordinator that ran an earlier medfed kept its nodes in Flower's SQLite state: they are
    carried into the registry once, with their node IDs (not the runs it held).
    """
    from server.superlink_state import NodeRegistry, nodes_of_sqlite_state  # noqa: PLC0415

    registry = NodeRegistry(paths.node_registry)
    if not paths.node_registry.exists() and paths.earlier_database.is_file():
        try:
            nodes = nodes_of_sqlite_state(paths.earlier_database)
        except sqlite3.Error as exc:
            raise MedfedError(
                f"{paths.earlier_database}: cannot read its enrolled nodes ({exc}); {RE_ENROL}"
            ) from exc
        registry.save(nodes)
        logger.info("kept %d node(s) of %s", len(nodes), paths.earlier_database)
    try:
        registry.load()
    except MedfedError as exc:
        raise MedfedError(f"{exc}; {RE_ENROL}") from exc


def flwr_cli(paths: CoordinatorPaths, *args: str, timeout_s: float = 60.0) -> str:
    """Run the Flower CLI against the coordinator's SuperLink; returns stdout."""
    result = subprocess.run(
        [flower_command("flwr"), *args],
        env=flower_environment(paths.flwr_home),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=paths.state,
    )
    if result.returncode != 0:
        raise MedfedError(
            f"flwr {' '.join(args[:2])} failed ({result.returncode}): "
            f"{(result.stdout + result.stderr).strip()[-800:]}"
        )
    return result.stdout


def flwr_cli_json(paths: CoordinatorPaths, *args: str) -> dict[str, Any]:
    """Run a Flower CLI command with ``--format json``; its JSON, raising when it failed.

    (flwr exits 0 on a failed call when asked for JSON: the ``success`` field tells.)
    """
    reply: dict[str, Any] = json.loads(flwr_cli(paths, *args, "--format", "json"))
    if not reply.get("success", False):
        raise MedfedError(f"flwr {' '.join(args[:2])}: {reply.get('error-message', reply)}")
    return reply


def online_sites(paths: CoordinatorPaths) -> int:
    """How many site nodes the SuperLink sees online now."""
    nodes = flwr_cli_json(paths, "supernode", "list", CONNECTION)["nodes"]
    return sum(node.get("status") == "online" for node in nodes)


def enrolled_sites(paths: CoordinatorPaths) -> dict[str, str]:
    """Node ID -> site name of the sites this coordinator enrolled."""
    if not paths.enrolled.is_file():
        return {}
    return dict(json.loads(paths.enrolled.read_text(encoding="utf-8")))


def enrol_sites(paths: CoordinatorPaths, kits: Path) -> list[str]:
    """Register every provisioned site's public key that is not enrolled yet; returns them."""
    enrolled = enrolled_sites(paths)
    added = []
    for public in sorted((KitPaths(kits).root / "sites").glob("*/site.key.pub")):
        name = public.parent.name
        if name in enrolled.values():
            continue
        try:
            reply = flwr_cli_json(
                paths, "supernode", "register", str(public), CONNECTION, "--name", name
            )
        except MedfedError as exc:
            if "already in use" in str(exc):  # enrolled by an earlier start of this SuperLink
                continue
            raise
        enrolled[str(reply["node-id"])] = name
        added.append(name)
    paths.enrolled.write_text(json.dumps(enrolled, indent=2), encoding="utf-8")
    return added


def write_info(settings: CoordinatorSettings, paths: CoordinatorPaths, superlink_pid: int) -> None:
    """Record where the running coordinator listens (read by `status` and `run`)."""
    info = {
        "fleet_address": f"{settings.host}:{settings.fleet_port}",
        "control_address": f"127.0.0.1:{settings.control_port}",
        "tls": not settings.insecure,
        "superlink_pid": superlink_pid,
        "coordinator_pid": os.getpid(),
    }
    paths.info.write_text(json.dumps(info, indent=2), encoding="utf-8")
