"""Run the deployment apps (legacy path, optional SecAgg+) on Flower's Simulation Engine.

The same ServerApp logic and site client as a real federation; each simulated site gets the
limits `medfed-site start` would give it, with its own data file.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

from flwr.app import Context
from flwr.client import Client
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from client.deployment_app import secure_aggregation_mod
from client.site_client import SiteClient, secret_seed
from client.site_limits import SiteLimits
from common.federation_job import FederationJob
from server.deployment_app import run_job
from simulations.flower_simulation import run_apps_in_simulation

__all__ = ["simulate_federation_job"]


def simulate_federation_job(
    job: FederationJob,
    site_data: Sequence[Path],
    run_dir: Path,
    seed_for_round: Callable[[int, int], int] | None = None,
) -> None:
    """Run ``job`` with one simulated site per entry of ``site_data``; results in ``run_dir``.

    ``seed_for_round(site, round)`` fixes each site's training seed (comparisons between runs);
    by default sites draw secret seeds as on a real federation.
    """
    data = [Path(path).resolve() for path in site_data]
    budget = job.privacy.target_epsilon

    def client_fn(context: Context) -> Client:
        site = int(context.node_config["partition-id"])  # type: ignore[call-overload]
        limits = SiteLimits(
            data=data[site], name=f"site-{site}", max_epsilon=budget,
            require_secure_aggregation=False,  # the researcher's own simulated sites
        )  # fmt: skip
        seeds = secret_seed if seed_for_round is None else lambda r: seed_for_round(site, r)
        return SiteClient(context, seeds, job, limits).to_client()

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        run_job(grid, context, job, run_dir.resolve())

    client_app = ClientApp(client_fn=client_fn, mods=[secure_aggregation_mod])
    run_apps_in_simulation(server_app, client_app, len(site_data))
