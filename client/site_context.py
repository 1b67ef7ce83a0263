"""Who this site is, from Flower's context: a hospital's node config, or a simulated site.

Light on purpose (no torch): the ClientApp module imports it in every process. A hospital's
SuperNode (`medfed-site start`) carries its data path, name, budget and state folder in its own
node config, which a job cannot change. Only a SuperNode of Flower's Simulation Engine (with a
``partition-id`` and no data path) reads its site from the run config's ``simulation`` table.
"""

from pathlib import Path

from flwr.app import Context

from client.site_limits import DATA_PATH, STATE_DIR, SiteLimits
from common.errors import ConfigError
from common.simulation_environment import SITE_DATA_FILE, SimulationEnvironment, site_folder

__all__ = ["PARTITION_ID", "simulated_site", "site_limits", "site_state_dir"]

#: Node config key of a simulated SuperNode (set by Flower's Simulation Engine).
PARTITION_ID = "partition-id"


def simulated_site(context: Context) -> tuple[int, SimulationEnvironment] | None:
    """(site index, environment) on a simulated SuperNode; None on a hospital's."""
    node = context.node_config
    if DATA_PATH in node or PARTITION_ID not in node:
        return None
    environment = SimulationEnvironment.from_run_config(context.run_config)
    if environment is None:
        return None
    return int(node[PARTITION_ID]), environment


def site_limits(context: Context) -> SiteLimits:
    """This site's limits: its node config's, or a simulated site's from the run config."""
    simulated = simulated_site(context)
    if simulated is None:
        return SiteLimits.from_node_config(context.node_config)
    index, environment = simulated
    folder = site_folder(environment.sites_dir, index)
    if not folder.is_dir():
        raise ConfigError("run config [simulation]", f"no folder {folder} for site {index}")
    return SiteLimits(
        data=folder / SITE_DATA_FILE,
        name=f"site-{index}",
        max_epsilon=environment.site_max_epsilon,
        state_dir=folder,
        delta=environment.site_delta,
        # A researcher may study training without DP or SecAgg+; a hospital's site may not.
        require_secure_aggregation=False,
        require_dp=False,
    )


def site_state_dir(context: Context) -> Path | None:
    """The folder of the site's own records (ledger, audit log), None if it keeps none."""
    simulated = simulated_site(context)
    if simulated is not None:
        index, environment = simulated
        return site_folder(environment.sites_dir, index)
    state_dir = context.node_config.get(STATE_DIR)
    return Path(str(state_dir)) if state_dir is not None else None
