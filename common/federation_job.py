"""The one description of a training job: job.toml, Flower's run config and the CLI derive from it.

A job names no data: each site trains on its own prepared cache, whose path comes from the site
(its node config, or the simulation's site folders) and never from the job. The task's shape is
declared instead, because the coordinator never sees an image. The same job runs on Flower's
Simulation Engine (`medfed-sim run`) and on a real federation (`medfed-server run`).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.config import (
    TRAINABLE_PARTS,
    ModelConfig,
    PrivacyConfig,
    StrategyConfig,
    TrainConfig,
    UpdatePrecision,
    cli,
    is_segmentation,
    model_fits_task,
    task_dims,
)
from common.config_files import read_toml, validate_model
from common.data.preprocessing_contract import PreprocessingContract

__all__ = [
    "ENVIRONMENT_KEYS",
    "INITIAL_WEIGHTS_KEY",
    "PATH_KEYS",
    "RESUME_KEY",
    "RUN_DIR_KEY",
    "SIMULATION_KEY",
    "THRESHOLD_DATA_KEY",
    "FederationJob",
    "SecureAggregationConfig",
    "load_federation_job",
]

#: Run config keys that describe where a job runs, not the job (sites ignore them): the
#: coordinator's run folder, whether to continue it from its checkpoint, and (simulations
#: only) the simulated sites' table.
RUN_DIR_KEY = "run_dir"
RESUME_KEY = "resume"
SIMULATION_KEY = "simulation"
ENVIRONMENT_KEYS = (RUN_DIR_KEY, RESUME_KEY, SIMULATION_KEY)
#: The dotted key of the checkpoint the global model starts from.
INITIAL_WEIGHTS_KEY = "model.initial_weights"
#: The key of the labelled data (the coordinator's, e.g. public) the decision threshold is
#: chosen on.
THRESHOLD_DATA_KEY = "threshold_data"
#: Job keys naming a file or folder: relative in a job file, they name one next to it.
PATH_KEYS = (INITIAL_WEIGHTS_KEY, THRESHOLD_DATA_KEY)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecureAggregationConfig(_Section):
    """SecAgg+ (Bell et al. 2020, eprint 2020/704) parameters; see docs/security.md."""

    enabled: bool = Field(
        True,
        description="SecAgg+: the server sees only the sum of the sites' updates.",
        json_schema_extra=cli("secure-aggregation"),
    )
    #: Share the mask keys with this fraction of the round's sites (1.0 = all of them).
    num_shares: float = Field(1.0, gt=0, le=1)
    #: Fraction of the shares needed to unmask; lower tolerates more drop-outs, higher
    #: needs more colluding sites to expose one site's update.
    reconstruction_threshold: float = Field(0.6, gt=0, le=1)
    #: Updates (weight deltas) are clamped to +-this before quantisation (2**22 levels, fewer
    #: past 3 sites at a 24-bit modulus: common/masked_packing.py).
    clipping_range: float = Field(2.0, gt=0, allow_inf_nan=False)
    #: Bits of the masking modulus; each masked entry travels in modulus_bits / 8 bytes. 24
    #: (0.75x the float32 model) quantises to 2**22 levels up to 3 sites and to
    #: (2**24 - 1) // sites beyond (1.7 million at 10 sites, 16,777 at 1000); 32 keeps 2**22
    #: levels up to 1024 sites for a third more upload.
    modulus_bits: Literal[24, 32] = 24
    #: At least the largest site's number of training examples. The aggregate's quantisation
    #: error grows with max_weight / (all sites' examples): keep it close to the largest site.
    max_weight: float = Field(10_000.0, gt=0, allow_inf_nan=False)
    #: Each site clips its delta to this L2 norm before sending (and masking) it; the
    #: coordinator refuses a plain reply, or an unmasked SecAgg+ mean, beyond it.
    max_update_norm: float = Field(10.0, gt=0, allow_inf_nan=False)
    #: Seconds to wait for each protocol stage before treating silent sites as dropped.
    timeout_s: float = Field(600.0, gt=0, allow_inf_nan=False)


class FederationJob(_Section):
    """One training job on the enrolled (or simulated) sites."""

    name: str = Field("medfed-job", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    task: Literal["classification", "segmentation", "segmentation-3d"] = Field(
        "classification",
        description="classification (one label per image), segmentation (a mask per image) or "
        "segmentation-3d (a mask per volume: caches prepared with --dims 3).",
    )
    rounds: int = Field(3, ge=1, le=10_000, description="Federated rounds.")
    #: A round goes on with the sites that replied, if at least this many did (drop-outs).
    min_sites: int = Field(
        2, ge=1, le=1000, description="Fewest sites a round needs to start and to complete."
    )
    #: Large simulations sample: each round asks max(min_sites, fraction x connected sites).
    site_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Fraction of the connected sites sampled each round to train and to "
        "evaluate (Flower's fraction_fit / fraction_evaluate); never fewer than min_sites.",
    )
    seed: int = Field(0, description="Seed of the initial model (sites draw secret seeds).")
    image_size: int = Field(
        64, ge=8, le=1024, description="Side of the square images (cubic volumes) in pixels."
    )
    #: The data the model takes: channels and output classes (image classes, or mask classes
    #: with background for segmentation). Optional names, one per output, comma-separated
    #: (Flower's run config holds no lists).
    in_channels: int = Field(1, ge=1, le=16)
    num_classes: int = Field(2, ge=2, le=1000)
    class_names: str = Field("", max_length=10_000)
    train: TrainConfig = TrainConfig()
    model: ModelConfig = ModelConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    strategy: StrategyConfig = StrategyConfig()
    secure_aggregation: SecureAggregationConfig = SecureAggregationConfig()
    update_precision: UpdatePrecision = Field(
        "float32",
        description="How each site sends its weight delta: float32, or float16 for about half "
        "the upload (rounding each entry to 11 significant bits). float16 needs "
        "secure_aggregation off: SecAgg+ sends its own integer vectors.",
    )
    threshold_data: str = Field(
        "",
        description="Binary classification: labelled data the coordinator holds and the "
        "hospitals do not (e.g. the public data of --initial-weights: a folder of prepared "
        "caches, a cache or a .npz; every split is used). The decision threshold is chosen on "
        "it each round (highest balanced accuracy), so the sites send no validation score "
        "counts and the threshold costs no patient any privacy (docs/privacy.md). Relative "
        "paths resolve as initial_weights'. Empty: chosen on the sites' validation counts.",
        json_schema_extra=cli("threshold-data"),
    )
    #: The preprocessing the sites' caches must have had (their preprocessing.json): a site
    #: whose cache differs refuses the job. Absent: any cache is accepted.
    preprocessing: PreprocessingContract | None = None

    @model_validator(mode="before")
    @classmethod
    def _model_fits_task(cls, raw: Any) -> Any:
        return model_fits_task(raw)

    @model_validator(mode="after")
    def _names_fit_classes(self) -> "FederationJob":
        names = self.class_names.split(",") if self.class_names else []
        if names and len(names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(names)} names for num_classes = {self.num_classes}"
            )
        return self

    @model_validator(mode="after")
    def _shape_fits_preprocessing(self) -> "FederationJob":
        contract = self.preprocessing
        if contract is not None and contract.dims != task_dims(self.task):
            raise ValueError(
                f"task = {self.task!r} trains on {task_dims(self.task)}D data but preprocessing "
                f"has dims = {contract.dims}"
            )
        if contract is not None and (contract.size, contract.channels) != (
            self.image_size,
            self.in_channels,
        ):
            raise ValueError(
                f"image_size = {self.image_size} and in_channels = {self.in_channels} but "
                f"preprocessing has size = {contract.size} and channels = {contract.channels}"
            )
        return self

    @field_validator("threshold_data")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        """A given path made absolute, so the ServerApp reads the data the user named."""
        return str(Path(value).expanduser().resolve()) if value else value

    @model_validator(mode="after")
    def _threshold_data_is_binary(self) -> "FederationJob":
        if self.threshold_data and (self.task != "classification" or self.num_classes != 2):
            raise ValueError(
                f"threshold_data applies to two-class classification only (task = "
                f"{self.task!r}, num_classes = {self.num_classes})"
            )
        return self

    @model_validator(mode="after")
    def _weights_fit_classes(self) -> "FederationJob":
        weights = self.train.class_weight_values
        if weights and self.task != "classification":
            raise ValueError("train.class_weights applies to classification only")
        if weights and len(weights) != self.num_classes:
            raise ValueError(
                f"train.class_weights has {len(weights)} weights for num_classes = "
                f"{self.num_classes}"
            )
        return self

    @model_validator(mode="after")
    def _trainable_part_exists(self) -> "FederationJob":
        part, network = self.train.trainable, self.model.name
        defined = TRAINABLE_PARTS.get(network, {})
        if part != "all" and part not in defined:
            raise ValueError(
                f"train.trainable = {part!r} is not defined for model {network!r} (defined: "
                f"{', '.join(['all', *defined])})"
            )
        return self

    @model_validator(mode="after")
    def _robust_aggregation_sees_single_updates(self) -> "FederationJob":
        aggregation = self.strategy.aggregation
        if aggregation != "mean" and self.secure_aggregation.enabled:
            raise ValueError(
                f"strategy.aggregation = {aggregation!r} needs each site's update, which "
                "SecAgg+ hides from the server: set secure_aggregation.enabled = false or "
                "aggregation = 'mean'"
            )
        return self

    @model_validator(mode="after")
    def _half_precision_fits(self) -> "FederationJob":
        if self.update_precision == "float32":
            return self
        if self.secure_aggregation.enabled:
            raise ValueError(
                f"update_precision = {self.update_precision!r} applies to plain rounds only: "
                "SecAgg+ masks quantised integers modulo 2**24 or 2**32 whatever the precision, "
                "and a 16-bit modulus would leave too few levels for the sites' sum; set "
                "secure_aggregation.enabled = false or update_precision = 'float32'"
            )
        largest = float(np.finfo(self.update_precision).max)
        if self.secure_aggregation.max_update_norm > largest:
            raise ValueError(
                f"secure_aggregation.max_update_norm = "
                f"{self.secure_aggregation.max_update_norm:g} lets a delta entry overflow "
                f"{self.update_precision} (largest {largest:g}); lower it or send float32"
            )
        return self

    @property
    def update_dtype(self) -> np.dtype:
        """The numpy dtype every array of a site's plain-round delta has."""
        return np.dtype(self.update_precision)

    @property
    def output_names(self) -> tuple[str, ...]:
        """One name per output: ``class_names``, or "0".."K-1" (segmentation: background first)."""
        if self.class_names:
            return tuple(self.class_names.split(","))
        if is_segmentation(self.task):
            return ("background", *(str(k) for k in range(1, self.num_classes)))
        return tuple(str(k) for k in range(self.num_classes))

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The model's input side per spatial axis: a square image, or a cubic volume."""
        return (self.image_size,) * task_dims(self.task)

    @property
    def proximal_mu(self) -> float:
        """The FedProx term the sites add (0 unless the strategy is fedprox)."""
        return self.strategy.proximal_mu if self.strategy.name == "fedprox" else 0.0

    def to_nested(self) -> dict[str, Any]:
        """TOML-ready tables (what job.toml and the generated app's pyproject hold).

        TOML and Flower's run config hold no None: an unset optional value is left out, and
        reading the job gives its default back.
        """
        return self.model_dump(mode="json", exclude_none=True)

    def to_flat(self) -> dict[str, Any]:
        """Dotted keys, as Flower flattens nested run config tables."""
        return flatten(self.to_nested())

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any], source: str = "run config") -> "FederationJob":
        """Rebuild from Flower's flattened run config (dotted keys); environment keys ignored."""
        job_keys = {
            key: value
            for key, value in flat.items()
            if key.partition(".")[0] not in ENVIRONMENT_KEYS
        }
        return _validate(unflatten(job_keys), source)


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (Flower's run config form)."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten`."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *sections, field = dotted.split(".")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[field] = value
    return nested


def _validate(raw: Mapping[str, Any], source: str) -> FederationJob:
    return validate_model(FederationJob, raw, source)


def load_federation_job(path: Path, overrides: Mapping[str, Any] | None = None) -> FederationJob:
    """Read job.toml (top-level keys plus its tables), with dotted ``overrides`` laid over it.

    A relative ``model.initial_weights`` or ``threshold_data`` in the file names one next to
    it; in ``overrides`` (the command line) one relative to the working directory.
    """
    from_file = flatten(read_toml(path))
    for key in PATH_KEYS:
        named = from_file.get(key)
        if isinstance(named, str) and named and not Path(named).expanduser().is_absolute():
            from_file[key] = str(path.parent / named)
    raw = unflatten({**from_file, **(overrides or {})})
    return _validate(raw, str(path))
