"""How a simulation makes hospitals out of one dataset: the settings beside the job."""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.data.partition import PartitionScheme
from common.simulation_environment import HOSTILE_PATTERN

__all__ = ["SimulationSettings"]


class SimulationSettings(BaseModel):
    """The simulated federation: which data, how many sites, how it is split among them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Path = Field(
        description="Dataset: a MedMNIST-style .npz, a site cache, a folder of site caches, or "
        "a folder of images with labels.csv."
    )
    sites: int = Field(3, ge=1, le=1000, description="Number of simulated hospitals.")
    partition: str = Field(
        "iid",
        description="iid, dirichlet:ALPHA (label skew), quantity:ALPHA (size skew) or site "
        "(keep each cache's own hospital).",
    )
    site_budget: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Each simulated site's own epsilon limit (its site.toml max-epsilon); "
        "default: the job's target epsilon.",
    )
    drop: str = Field(
        "",
        pattern=r"^(\d+@\d+)?(,\d+@\d+)*$",
        description="Scripted drop-outs SITE@ROUND[,...]: site SITE stops answering from ROUND.",
    )
    #: Test-only: simulated sites that poison their replies, "SITE:KIND,..." (see
    #: common.simulation_environment.HOSTILE_KINDS). No description: no command-line option.
    hostile: str = Field("", pattern=HOSTILE_PATTERN)
    cpus_per_site: float = Field(
        1.0, gt=0, le=64, description="CPUs Ray reserves for each simulated site at a time."
    )
    ray_address: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9.\-]+:\d{1,5}$",
        description="Run the simulated sites on this existing Ray cluster (its head's HOST:PORT, "
        "as `ray start --head --port PORT` printed) instead of a private Ray on this machine.",
    )

    @field_validator("partition")
    @classmethod
    def _partition_parses(cls, value: str) -> str:
        return str(PartitionScheme.parse(value))
