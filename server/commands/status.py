"""`medfed-server status`: enrolled and connected sites, runs, and the current round."""

import json

from rich.console import Console
from rich.table import Table

from common.cli_support import configure_logging, user_errors
from server.commands.options import (
    DEFAULT_STATE,
    StateOption,
    VerboseOption,
    running_coordinator,
)
from server.coordinator import CONNECTION, CoordinatorPaths, enrolled_sites, flwr_cli_json

__all__ = ["status"]


def _latest_round(paths: CoordinatorPaths) -> str:
    runs = sorted(p for p in paths.runs.glob("*") if (p / "metrics.json").is_file())
    if not runs:
        return "no job yet"
    metrics = json.loads((runs[-1] / "metrics.json").read_text(encoding="utf-8"))
    rounds = [int(r) for r in metrics["federated"]["evaluate"]]
    return f"{runs[-1].name}: round {max(rounds, default=0)} completed"


def status(
    state: StateOption = DEFAULT_STATE,
    verbose: VerboseOption = False,
) -> None:
    """Print the sites the SuperLink knows (and which are online) and the latest job's round."""
    configure_logging(verbose)
    console = Console()
    with user_errors():
        paths = running_coordinator(state)
        info = json.loads(paths.info.read_text(encoding="utf-8"))
        nodes = flwr_cli_json(paths, "supernode", "list", CONNECTION)
    names = enrolled_sites(paths)
    table = Table(title=f"sites (Fleet gateway {info['fleet_address']})")
    for column in ("site", "node id", "status", "online since"):
        table.add_column(column)
    for node in nodes.get("nodes", []):
        node_id = str(node.get("node-id", "?"))
        table.add_row(
            names.get(node_id, "(not enrolled by medfed)"),
            node_id,
            str(node.get("status", "?")),
            str(node.get("online-at", "")),
        )
    console.print(table)
    console.print(f"current job: {_latest_round(paths)}")
