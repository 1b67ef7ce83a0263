"""Where a simulated job runs: its sites' data folders, budgets and scripted drop-outs.

`medfed-sim run` writes this table into the run config under ``simulation``; the ClientApp reads
it only on a SuperNode of Flower's Simulation Engine (whose node config has a ``partition-id``
and no site data path), never on a hospital's SuperNode, whose limits come from its own node
config. The ServerApp reads ``test_data`` to evaluate the global model centrally.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.config_files import validate_model

__all__ = [
    "HOSTILE_KINDS",
    "HOSTILE_PATTERN",
    "SITE_DATA_FILE",
    "SimulationEnvironment",
    "site_folder",
]

#: A simulated site's data inside its folder.
SITE_DATA_FILE = "data.npz"


#: How a simulated hostile site poisons its reply (tests and benchmarks of the defences only):
#: NaN entries, every entry 1e30, its delta x1000, its delta reversed at the job's norm bound,
#: one array missing a row, 10**9 declared training images, or minus its own count.
HOSTILE_KINDS = (
    "nan", "huge", "scale1000", "flip", "wrong-shape", "inflated-examples", "negative-examples"
)  # fmt: skip
#: "SITE:KIND[,...]" (site index, one of HOSTILE_KINDS).
HOSTILE_PATTERN = rf"^(\d+:({'|'.join(HOSTILE_KINDS)}))?(,\d+:({'|'.join(HOSTILE_KINDS)}))*$"


def site_folder(sites_dir: Path, partition_id: int) -> Path:
    """The folder of simulated site ``partition_id``: its data.npz and its state (ledger, audit)."""
    return sites_dir / f"site-{partition_id}"


class SimulationEnvironment(BaseModel):
    """The ``simulation`` table of a simulated job's run config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: One folder per simulated site (see :func:`site_folder`).
    sites_dir: Path
    #: The held-out test set the ServerApp evaluates every global model on ("" for none).
    test_data: str = ""
    #: Each simulated site's own epsilon limit (its site.toml's max-epsilon on a federation).
    site_max_epsilon: float = Field(8.0, gt=0, allow_inf_nan=False)
    #: The delta each simulated site composes its budget at (its site.toml's delta).
    site_delta: float = Field(1e-5, gt=0, lt=1)
    #: Seed local training from (job seed, site, round) instead of a secret seed: runs repeat.
    fixed_seeds: bool = False
    #: Scripted drop-outs: "SITE@ROUND,..." (site index, first round it stops answering).
    drop: str = ""
    #: Sites that poison every reply, "SITE:KIND,...": a test-only switch read by simulated
    #: sites alone (a hospital's SiteClient never sees this table).
    hostile: str = Field("", pattern=HOSTILE_PATTERN)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> "SimulationEnvironment | None":
        """The table from Flower's flattened run config, None outside a simulation."""
        prefix = "simulation."
        raw = {k[len(prefix) :]: v for k, v in run_config.items() if k.startswith(prefix)}
        return validate_model(cls, raw, "run config [simulation]") if raw else None

    def drops(self) -> dict[int, int]:
        """Site index -> first round it does not answer."""
        scripted: dict[int, int] = {}
        for item in filter(None, (part.strip() for part in self.drop.split(","))):
            site, _, round_number = item.partition("@")
            scripted[int(site)] = int(round_number)
        return scripted

    def hostile_sites(self) -> dict[int, str]:
        """Site index -> how it poisons its replies."""
        return {
            int(site): kind
            for site, _, kind in (item.partition(":") for item in self.hostile.split(",") if item)
        }
