"""`medfed-server status`: enrolled and connected sites, runs, and the current round."""

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from common.cli_support import (
    FormatOption,
    OutputFormat,
    configure_logging,
    emit_json,
    user_errors,
)
from server.commands.options import (
    DEFAULT_STATE,
    StateOption,
    VerboseOption,
    running_coordinator,
)
from server.coordinator import CONNECTION, CoordinatorPaths, enrolled_sites, flwr_cli_json

__all__ = ["status"]


def _latest_job(paths: CoordinatorPaths) -> dict[str, Any] | None:
    """The latest run folder with metrics and its last completed round; None before any job."""
    runs = sorted(p for p in paths.runs.glob("*") if (p / "metrics.json").is_file())
    if not runs:
        return None
    metrics = json.loads((runs[-1] / "metrics.json").read_text(encoding="utf-8"))
    rounds = [int(r) for r in metrics["federated"]["evaluate"]]
    return {"run": runs[-1].name, "completed_rounds": max(rounds, default=0)}


def status(
    state: StateOption = DEFAULT_STATE,
    output: FormatOption = OutputFormat.TEXT,
    verbose: VerboseOption = False,
) -> None:
    """Print the sites the SuperLink knows (and which are online) and the latest job's round.

    JSON keys: fleet_address, sites (site, node_id, status, online_since), current_job (run,
    completed_rounds; null before the first job).
    """
    configure_logging(verbose)
    with user_errors(output):
        paths = running_coordinator(state)
        info = json.loads(paths.info.read_text(encoding="utf-8"))
        nodes = flwr_cli_json(paths, "supernode", "list", CONNECTION)
        names = enrolled_sites(paths)
        sites = [
            {
                "site": names.get(str(node.get("node-id")), None),
                "node_id": str(node.get("node-id", "?")),
                "status": str(node.get("status", "?")),
                "online_since": node.get("online-at") or None,
            }
            for node in nodes.get("nodes", [])
        ]
        job = _latest_job(paths)
    if output is OutputFormat.JSON:
        emit_json({"fleet_address": info["fleet_address"], "sites": sites, "current_job": job})
        return
    table = Table(title=f"sites (Fleet gateway {info['fleet_address']})")
    for column in ("site", "node id", "status", "online since"):
        table.add_column(column)
    for site in sites:
        table.add_row(
            site["site"] or "(not enrolled by medfed)",
            site["node_id"],
            site["status"],
            site["online_since"] or "",
        )
    console = Console()
    console.print(table)
    shown = f"{job['run']}: round {job['completed_rounds']} completed" if job else "no job yet"
    console.print(f"current job: {shown}")
