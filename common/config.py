"""The sections of a training job (train, model, privacy, strategy), typed and validated once.

Every field's description is its command-line help and ``cli`` (in ``json_schema_extra``) its
option name where that differs from the field name: see :mod:`common.job_options`.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "CLASSIFICATION_MODELS",
    "SEGMENTATION_MODELS",
    "PREPARED_TASKS",
    "TASKS",
    "TRAINABLE_PARTS",
    "UPDATE_PRECISIONS",
    "UpdatePrecision",
    "is_segmentation",
    "task_dims",
    "ModelConfig",
    "PrivacyConfig",
    "StrategyConfig",
    "TrainConfig",
    "model_fits_task",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def cli(name: str) -> dict[str, Any]:
    """``json_schema_extra`` naming a field's command-line option (without the dashes)."""
    return {"cli": name}


class TrainConfig(_Frozen):
    """Local training at each site."""

    local_epochs: int = Field(1, ge=1, le=100, description="Local epochs per round.")
    batch_size: int = Field(
        32, ge=1, le=4096, description="Batch size (expected size under DP Poisson sampling)."
    )
    learning_rate: float = Field(
        1e-3, gt=0, le=10, description="Local learning rate.", json_schema_extra=cli("lr")
    )
    optimizer: Literal["adam", "sgd"] = Field("adam", description="Local optimizer.")
    class_weights: str = Field(
        "",
        max_length=10_000,
        description="Classification: the loss weight of each class, comma-separated in class "
        "order (e.g. 1,2.7 counts a lesion image 2.7 times), so that argmax predictions of a rare "
        "class mean something. Fixed in the job, never computed from a site's data, so it costs "
        "no privacy (take it from public data: medfed-sim pretrain prints the class counts). "
        "Empty: equal weights.",
    )

    trainable: Literal["all", "last-block", "head"] = Field(
        "all",
        description="Which of the network's parameters the sites train: all, last-block (the "
        "last feature block and the output layer) or head (the output layer only). The others "
        "keep the global model's weights (e.g. features pretrained on public data: "
        "--initial-weights): they are not clipped or noised under DP and their delta is zero. "
        "DP-SGD's noise grows with the number of trained parameters (docs/privacy.md).",
    )

    @field_validator("class_weights")
    @classmethod
    def _positive_numbers(cls, value: str) -> str:
        """Each weight a finite number > 0."""
        for item in filter(None, value.split(",")):
            try:
                number = float(item)
            except ValueError:
                raise ValueError(f"class_weights item {item!r} is not a number") from None
            if not (0 < number < float("inf")):
                raise ValueError(f"class_weights item {item!r} must be a finite number > 0")
        return value

    @property
    def class_weight_values(self) -> tuple[float, ...]:
        """The weights as numbers, () for equal weights."""
        return tuple(float(item) for item in self.class_weights.split(",") if item)


#: The networks of each task (common.models builds them).
CLASSIFICATION_MODELS = ("cnn", "pooled-cnn", "resnet18", "densenet121")
SEGMENTATION_MODELS = ("basicunet", "unet")
#: Each network's parts that ``train.trainable`` can train alone, as parameter-name prefixes
#: (the one definition; common.models.freeze_all_but applies it, and a job naming a part its
#: network lacks is refused). "head" is the output layer; "last-block" adds the last block of
#: features before it (for a U-Net: the last decoder block).
TRAINABLE_PARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "cnn": {"head": ("final.",), "last-block": ("net.layer_2.", "final.")},
    "pooled-cnn": {"head": ("final.",), "last-block": ("features.layer_2.", "final.")},
    "resnet18": {"head": ("fc.",), "last-block": ("layer4.1.", "fc.")},
    "densenet121": {
        "head": ("class_layers.out.",),
        "last-block": (
            "features.denseblock4.denselayer16.",
            "features.norm5.",
            "class_layers.out.",
        ),
    },
    "basicunet": {"head": ("final_conv.",), "last-block": ("upcat_1.", "final_conv.")},
    "unet": {"head": ("model.2.1.",), "last-block": ("model.2.",)},
}
#: What `medfed-site prepare` labels data for (--task); a cache's contract names one of them.
PREPARED_TASKS = ("classification", "segmentation")
#: Every job task; segmentation-3d trains on segmentation caches prepared with --dims 3.
TASKS = (*PREPARED_TASKS, "segmentation-3d")


#: How a site's weight delta travels in a plain round (numpy dtype names). float16, not
#: bfloat16: deltas are small numbers well inside float16's range (clipped to max_update_norm),
#: where its 11 significant bits beat bfloat16's 8, and numpy saves it without extra packages.
UpdatePrecision = Literal["float32", "float16"]
UPDATE_PRECISIONS: tuple[str, ...] = get_args(UpdatePrecision)


def is_segmentation(task: str) -> bool:
    """True for the tasks that predict a mask (2D or 3D)."""
    return task in ("segmentation", "segmentation-3d")


def task_dims(task: str) -> int:
    """Spatial dimensions of a task's samples: 3 for segmentation-3d, else 2."""
    return 3 if task == "segmentation-3d" else 2


class ModelConfig(_Frozen):
    """Which network to build; see common.models for the choices."""

    name: Literal["cnn", "pooled-cnn", "resnet18", "densenet121", "basicunet", "unet"] = Field(
        "cnn",
        description="classification: cnn, pooled-cnn (global average pooling), resnet18 or "
        "densenet121; segmentation: basicunet or unet (MONAI); each task defaults to its first.",
        json_schema_extra=cli("model"),
    )
    norm: Literal["group", "instance", "batch"] = Field(
        "group", description="Normalisation layers (batch is refused with DP)."
    )
    initial_weights: str = Field(
        "",
        description="A medfed checkpoint (e.g. from `medfed-sim pretrain` on public data) the "
        "global model starts from; read by the coordinator only (sites receive the weights). "
        "Relative paths resolve against the job file's folder, or the working directory on the "
        "command line. Empty: seeded random weights.",
        json_schema_extra=cli("initial-weights"),
    )

    @field_validator("initial_weights")
    @classmethod
    def _absolute(cls, value: str) -> str:
        """A given path made absolute, so the ServerApp reads the file the user named."""
        return str(Path(value).expanduser().resolve()) if value else value


class PrivacyConfig(_Frozen):
    """DP-SGD at the site (Abadi et al. 2016, arXiv:1607.00133) via Opacus."""

    enabled: bool = Field(
        True,
        description="Differentially private training at every site.",
        json_schema_extra=cli("dp"),
    )
    target_epsilon: float = Field(
        8.0,
        gt=0,
        le=100,
        description="Target epsilon per site over the whole job.",
        json_schema_extra=cli("dp-epsilon"),
    )
    target_delta: float = Field(
        1e-5, gt=0, lt=1, description="Target delta.", json_schema_extra=cli("dp-delta")
    )
    max_grad_norm: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="Per-sample gradient clipping norm."
    )
    accountant: Literal["rdp", "prv"] = Field("rdp", description="Privacy accountant.")
    unit: Literal["auto", "patient", "image"] = Field(
        "auto",
        description="What epsilon protects: patient (all of a patient's images are one unit, "
        "sampled, clipped and accounted together), image, or auto (patient wherever the data "
        "knows its patients, else image, and every report says so).",
        json_schema_extra=cli("dp-unit"),
    )
    max_images_per_patient: int = Field(
        16,
        ge=1,
        le=4096,
        description="At most this many of a sampled patient's images enter one step.",
    )


class StrategyConfig(_Frozen):
    """Server-side aggregation."""

    name: Literal["fedavg", "fedprox", "fedadam"] = Field(
        "fedavg",
        description="fedavg (McMahan et al. 2017), fedprox (Li et al. 2020: a proximal term at "
        "the sites) or fedadam (Reddi et al. 2021: Adam on the server).",
        json_schema_extra=cli("strategy"),
    )
    proximal_mu: float = Field(0.01, ge=0, description="FedProx mu.")
    server_learning_rate: float = Field(
        0.01, gt=0, description="FedAdam server learning rate.", json_schema_extra=cli("server-lr")
    )
    aggregation: Literal["mean", "median", "trimmed-mean", "krum", "multi-krum"] = Field(
        "mean",
        description="How the sites' deltas are combined: mean (sample-weighted), or robust to "
        "poisoned updates: median or trimmed-mean (coordinate-wise, Yin et al. 2018), krum or "
        "multi-krum (Blanchard et al. 2017). Robust choices need secure aggregation off.",
    )
    trim_fraction: float = Field(
        0.2,
        ge=0,
        lt=0.5,
        description="trimmed-mean: fraction of the sites cut at each end, per coordinate (beta).",
    )
    byzantine_sites: int = Field(
        1,
        ge=0,
        le=1000,
        description="krum / multi-krum: sites assumed hostile (f); multi-krum averages the n-f "
        "best-scored deltas.",
    )


def model_fits_task(raw: Any) -> Any:
    """Raw job settings with each task defaulted to its own network; refuses the other's.

    For a pydantic ``model_validator(mode="before")`` of a job with ``task`` and ``model``.
    """
    if not isinstance(raw, Mapping):
        return raw
    task = raw.get("task", "classification")
    model = raw.get("model")
    model = model.model_dump() if isinstance(model, BaseModel) else dict(model or {})
    segmentation = is_segmentation(task)
    allowed: tuple[str, ...] = CLASSIFICATION_MODELS
    if segmentation:  # a 3D job defaults to the faster UNet (docs/results.md)
        allowed = SEGMENTATION_MODELS[::-1] if task_dims(task) == 3 else SEGMENTATION_MODELS
    if "name" not in model:
        model = {"norm": "instance", **model} if segmentation else model
        return {**raw, "model": {**model, "name": allowed[0]}}
    if task in TASKS and model["name"] not in allowed:
        raise ValueError(
            f"model {model['name']!r} is not a {task} network; choose from {list(allowed)}"
        )
    return raw
