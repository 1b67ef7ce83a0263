"""Typed, validated job configuration, parsed once from TOML, CLI flags or a Flower run config."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.config_files import read_toml, validate_model
from common.data.partition import PartitionScheme
from common.errors import ConfigError

__all__ = [
    "CLASSIFICATION_MODELS",
    "SEGMENTATION_MODELS",
    "TASKS",
    "JobConfig",
    "ModelConfig",
    "PrivacyConfig",
    "StrategyConfig",
    "TrainConfig",
    "load_job_config",
    "model_fits_task",
    "validate_job_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainConfig(_Frozen):
    """Local training at each site."""

    local_epochs: int = Field(1, ge=1, le=100)
    batch_size: int = Field(32, ge=1, le=4096)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["adam", "sgd"] = "adam"


#: The networks of each task (common.models builds them).
CLASSIFICATION_MODELS = ("cnn", "resnet18", "densenet121")
SEGMENTATION_MODELS = ("basicunet", "unet")
TASKS = ("classification", "segmentation")


class ModelConfig(_Frozen):
    """Which network to build; see common.models for the choices."""

    name: Literal["cnn", "resnet18", "densenet121", "basicunet", "unet"] = "cnn"
    norm: Literal["group", "instance", "batch"] = "group"


class PrivacyConfig(_Frozen):
    """DP-SGD at the site (Abadi et al. 2016, arXiv:1607.00133) via Opacus."""

    enabled: bool = True
    target_epsilon: float = Field(8.0, gt=0, le=100)
    target_delta: float = Field(1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    accountant: Literal["rdp", "prv"] = "rdp"
    #: What epsilon protects. "patient" (the default): all images of a patient are one unit,
    #: sampled, clipped and accounted together (common.privacy.patient_dp); data that does not
    #: know its patients then trains per image, logged and reported so. Set explicitly,
    #: "patient" refuses such data. "image": every image is a unit (Opacus' DP-SGD).
    unit: Literal["patient", "image"] = "patient"
    #: At most this many of a sampled patient's images enter one step (drawn at random).
    max_images_per_patient: int = Field(16, ge=1, le=4096)


class StrategyConfig(_Frozen):
    """Server-side aggregation."""

    name: Literal["fedavg", "fedprox", "fedadam"] = "fedavg"
    proximal_mu: float = Field(0.01, ge=0)
    server_learning_rate: float = Field(0.01, gt=0)


def model_fits_task(raw: Any) -> Any:
    """Raw job settings with each task defaulted to its own network; refuses the other task's.

    For a pydantic ``model_validator(mode="before")`` of any job with ``task`` and ``model``.
    """
    if not isinstance(raw, Mapping):
        return raw
    task = raw.get("task", "classification")
    model = raw.get("model")
    model = model.model_dump() if isinstance(model, BaseModel) else dict(model or {})
    allowed = SEGMENTATION_MODELS if task == "segmentation" else CLASSIFICATION_MODELS
    if "name" not in model:
        model = {"norm": "instance", **model} if task == "segmentation" else model
        return {**raw, "model": {**model, "name": allowed[0]}}
    if task in TASKS and model["name"] not in allowed:
        raise ValueError(
            f"model {model['name']!r} is not a {task} network; choose from {list(allowed)}"
        )
    return raw


class JobConfig(_Frozen):
    """Everything one federated training job needs, shared by server, sites and simulations."""

    data: Path
    task: Literal["classification", "segmentation"] = "classification"
    num_sites: int = Field(3, ge=1, le=1000)
    rounds: int = Field(3, ge=1, le=10_000)
    partition: str = "iid"
    seed: int = 0
    image_size: int = Field(64, ge=8, le=1024)
    train: TrainConfig = TrainConfig()
    model: ModelConfig = ModelConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    strategy: StrategyConfig = StrategyConfig()

    @field_validator("partition")
    @classmethod
    def _partition_parses(cls, value: str) -> str:
        return str(PartitionScheme.parse(value))

    @model_validator(mode="before")
    @classmethod
    def _model_fits_task(cls, raw: Any) -> Any:
        return model_fits_task(raw)

    @property
    def partition_scheme(self) -> PartitionScheme:
        """The parsed site partitioning scheme."""
        return PartitionScheme.parse(self.partition)

    def to_flat(self) -> dict[str, str | int | float | bool]:
        """Flatten to the dash-separated keys of a Flower run config."""
        return {
            "data": str(self.data),
            "task": self.task,
            "num-sites": self.num_sites,
            "num-server-rounds": self.rounds,
            "partition": self.partition,
            "seed": self.seed,
            "image-size": self.image_size,
            "local-epochs": self.train.local_epochs,
            "batch-size": self.train.batch_size,
            "learning-rate": self.train.learning_rate,
            "optimizer": self.train.optimizer,
            "model": self.model.name,
            "norm": self.model.norm,
            "dp-enabled": self.privacy.enabled,
            "dp-epsilon": self.privacy.target_epsilon,
            "dp-delta": self.privacy.target_delta,
            "dp-max-grad-norm": self.privacy.max_grad_norm,
            "dp-accountant": self.privacy.accountant,
            "strategy": self.strategy.name,
            "proximal-mu": self.strategy.proximal_mu,
            "server-learning-rate": self.strategy.server_learning_rate,
        }

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any], source: str = "run config") -> "JobConfig":
        """Build from the flat keys produced by :meth:`to_flat` (e.g. Flower's run config)."""
        known = set(_FLAT_KEYS)
        unknown = sorted(set(flat) - known)
        if unknown:
            raise ConfigError(source, f"unknown key(s) {unknown}; known keys: {sorted(known)}")
        nested: dict[str, Any] = {}
        for key, value in flat.items():
            section, field = _FLAT_KEYS[key]
            target = nested.setdefault(section, {}) if section else nested
            target[field] = value
        return validate_job_config(nested, source)


_FLAT_KEYS: dict[str, tuple[str | None, str]] = {
    "data": (None, "data"),
    "task": (None, "task"),
    "num-sites": (None, "num_sites"),
    "num-server-rounds": (None, "rounds"),
    "partition": (None, "partition"),
    "seed": (None, "seed"),
    "image-size": (None, "image_size"),
    "local-epochs": ("train", "local_epochs"),
    "batch-size": ("train", "batch_size"),
    "learning-rate": ("train", "learning_rate"),
    "optimizer": ("train", "optimizer"),
    "model": ("model", "name"),
    "norm": ("model", "norm"),
    "dp-enabled": ("privacy", "enabled"),
    "dp-epsilon": ("privacy", "target_epsilon"),
    "dp-delta": ("privacy", "target_delta"),
    "dp-max-grad-norm": ("privacy", "max_grad_norm"),
    "dp-accountant": ("privacy", "accountant"),
    "strategy": ("strategy", "name"),
    "proximal-mu": ("strategy", "proximal_mu"),
    "server-learning-rate": ("strategy", "server_learning_rate"),
}


def validate_job_config(raw: Mapping[str, Any], source: str) -> JobConfig:
    """Validate a nested mapping into a JobConfig; errors name ``source``, the key and the value."""
    return validate_model(JobConfig, raw, source)


def load_job_config(path: Path, overrides: Mapping[str, Any] | None = None) -> JobConfig:
    """Read a job TOML file (nested tables train/model/privacy/strategy), then apply overrides.

    Relative ``data`` paths are resolved against the TOML file's folder.
    """
    raw = read_toml(path)
    if "data" in raw and not Path(str(raw["data"])).is_absolute():
        raw["data"] = str((path.parent / str(raw["data"])).resolve())
    for key, value in (overrides or {}).items():
        section, _, field = key.rpartition(".")
        target = raw.setdefault(section, {}) if section else raw
        target[field] = value
    return validate_job_config(raw, str(path))
