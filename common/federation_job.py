"""A training job on a real federation (job.toml), as the coordinator launches it.

Unlike a simulation's :class:`~common.config.JobConfig` it names no data: each site trains on
its own prepared cache, whose path comes from the site's node config and never from the job.
The task's shape is declared instead, because the coordinator never sees an image.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.config import JobConfig, ModelConfig, PrivacyConfig, TrainConfig, model_fits_task
from common.config_files import read_toml, validate_model

__all__ = [
    "RESUME_KEY",
    "RUN_DIR_KEY",
    "FederationJob",
    "SecureAggregationConfig",
    "load_federation_job",
]

#: Run config keys set by ``medfed-server run`` that are not properties of the job (sites
#: ignore them): the coordinator's run folder, and whether to continue it from its checkpoint.
RUN_DIR_KEY = "run_dir"
RESUME_KEY = "resume"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecureAggregationConfig(_Section):
    """SecAgg+ (Bell et al. 2020, eprint 2020/704) parameters; see docs/security.md."""

    enabled: bool = True
    #: Share the mask keys with this fraction of the round's sites (1.0 = all of them).
    num_shares: float = Field(1.0, gt=0, le=1)
    #: Fraction of the shares needed to unmask; lower tolerates more drop-outs, higher
    #: needs more colluding sites to expose one site's update.
    reconstruction_threshold: float = Field(0.6, gt=0, le=1)
    #: Updates (weight deltas) are clamped to +-this before quantisation to 2**22 levels.
    clipping_range: float = Field(2.0, gt=0)
    #: At least the largest site's number of training examples. The aggregate's quantisation
    #: error grows with max_weight / (all sites' examples): keep it close to the largest site.
    max_weight: float = Field(10_000.0, gt=0)
    #: Seconds to wait for each protocol stage before treating silent sites as dropped.
    timeout_s: float = Field(600.0, gt=0)


class FederationJob(_Section):
    """One training job on the enrolled sites."""

    name: str = Field("medfed-job", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    #: classification (num_classes = image classes) or segmentation (num_classes = mask
    #: classes, background included); each defaults to its own network.
    task: Literal["classification", "segmentation"] = "classification"
    #: FedProx (Li et al. 2020) adds a proximal term at the sites; the server averages alike.
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    proximal_mu: float = Field(0.01, ge=0)
    rounds: int = Field(3, ge=1, le=10_000)
    min_sites: int = Field(2, ge=1, le=1000)
    seed: int = 0
    image_size: int = Field(64, ge=8, le=1024)
    in_channels: int = Field(1, ge=1, le=16)
    num_classes: int = Field(2, ge=2, le=1000)
    train: TrainConfig = TrainConfig()
    model: ModelConfig = ModelConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    secure_aggregation: SecureAggregationConfig = SecureAggregationConfig()

    @model_validator(mode="before")
    @classmethod
    def _model_fits_task(cls, raw: Any) -> Any:
        return model_fits_task(raw)

    def site_job(self, data: Path) -> JobConfig:
        """The local-training view of this job for a site whose prepared cache is ``data``."""
        return JobConfig(
            data=data,
            task=self.task,
            num_sites=1,
            rounds=self.rounds,
            seed=self.seed,
            image_size=self.image_size,
            train=self.train,
            model=self.model,
            privacy=self.privacy,
        )

    def to_nested(self) -> dict[str, Any]:
        """TOML-ready tables (what job.toml and the generated app's pyproject hold)."""
        return self.model_dump(mode="json")

    def to_flat(self) -> dict[str, Any]:
        """Dotted keys, as Flower flattens nested run config tables."""
        flat: dict[str, Any] = {}
        for key, value in self.to_nested().items():
            if isinstance(value, dict):
                flat.update({f"{key}.{sub}": item for sub, item in value.items()})
            else:
                flat[key] = value
        return flat

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any], source: str = "run config") -> "FederationJob":
        """Rebuild from Flower's flattened run config (dotted keys)."""
        nested: dict[str, Any] = {}
        for key, value in flat.items():
            if key in (RUN_DIR_KEY, RESUME_KEY):
                continue
            section, _, field = key.rpartition(".")
            (nested.setdefault(section, {}) if section else nested)[field] = value
        return _validate(nested, source)


def _validate(raw: Mapping[str, Any], source: str) -> FederationJob:
    return validate_model(FederationJob, raw, source)


def load_federation_job(path: Path) -> FederationJob:
    """Read job.toml (top-level keys plus [train] [model] [privacy] [secure_aggregation])."""
    return _validate(read_toml(path), str(path))
