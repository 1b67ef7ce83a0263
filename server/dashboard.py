"""The coordinator's dashboard: a local web page of the federation, refreshed while jobs run."""

import base64
import csv
from collections import defaultdict
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from common.errors import MedfedError
from server.coordinator import CONNECTION, CoordinatorPaths, enrolled_sites, flwr_cli_json
from server.fleet_gateway import site_key_fingerprint
from server.provisioning import KitPaths
from server.run_report import LiveStatus, render_run_page

__all__ = ["create_dashboard", "kit_fingerprints"]


def kit_fingerprints(kits: Path) -> dict[str, str]:
    """Traffic-log fingerprint -> site name, for every provisioned site key."""
    names = {}
    for public in sorted((KitPaths(kits).root / "sites").glob("*/site.key.pub")):
        key = serialization.load_ssh_public_key(public.read_bytes())
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        names[site_key_fingerprint(base64.b64encode(pem).decode("ascii"))] = public.parent.name
    return names


def _traffic(paths: CoordinatorPaths, names: dict[str, str]) -> dict[str, tuple[int, int]]:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    log = paths.logs / "fleet-traffic.csv"
    if log.is_file():
        with log.open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                site = names.get(row["site_key"], row["site_key"])
                totals[site][0] += int(row["bytes_up"])
                totals[site][1] += int(row["bytes_down"])
    return {site: (up, down) for site, (up, down) in totals.items()}


def _live(paths: CoordinatorPaths, names: dict[str, str]) -> LiveStatus:
    enrolled = enrolled_sites(paths)
    try:
        nodes = flwr_cli_json(paths, "supernode", "list", CONNECTION)["nodes"]
    except MedfedError as exc:  # coordinator down: show the records, say so
        return LiveStatus(sites=[("(coordinator not reachable)", "", str(exc)[:120])])
    sites = [
        (enrolled.get(str(n["node-id"]), "?"), str(n["node-id"]), str(n["status"])) for n in nodes
    ]
    return LiveStatus(sites=sites, traffic=_traffic(paths, names))


def create_dashboard(state: Path, kits: Path, refresh_s: int = 5) -> Starlette:
    """ASGI app: ``/`` shows the latest job, ``/runs/<name>`` any job of this coordinator."""
    paths = CoordinatorPaths(state)
    names = kit_fingerprints(kits)

    def page(run_dir: Path) -> Response:
        return HTMLResponse(render_run_page(run_dir, _live(paths, names), refresh_s))

    async def latest(_: Request) -> Response:
        runs = sorted(p for p in paths.runs.glob("*") if p.is_dir())
        if not runs:
            return PlainTextResponse("no job has run on this coordinator yet\n", 404)
        return page(runs[-1])

    async def one_run(request: Request) -> Response:
        run_dir = paths.runs / request.path_params["name"]
        if "/" in request.path_params["name"] or not run_dir.is_dir():
            return PlainTextResponse("no such run\n", 404)
        return page(run_dir)

    return Starlette(routes=[Route("/", latest), Route("/runs/{name}", one_run)])
