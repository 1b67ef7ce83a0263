"""Load a checkpoint written by medfed training and rebuild its network for inference."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from common.checkpoint import load_checkpoint
from common.config import is_segmentation
from common.config_files import validate_model
from common.data.arrays import unnamed_segments
from common.data.preprocessing_contract import PreprocessingContract, stale_format
from common.errors import DataFormatError
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks.threshold import THRESHOLD

__all__ = ["TrainedModel", "decision_threshold", "load_trained_model", "output_names"]

_REQUIRED = ("state_dict", "job", "in_channels", "num_classes", "image_size")


@dataclass(frozen=True)
class TrainedModel:
    """A network in eval mode with what inference needs to know about it."""

    network: nn.Module
    task: str
    model_name: str
    in_channels: int
    #: Side of the square images the network was trained on (pixels).
    size: int
    #: Classification: image classes. Segmentation: mask classes, 0 = background.
    output_names: tuple[str, ...]
    round_number: int
    #: How the training data were prepared (the job's contract); None for older checkpoints
    #: and models trained on data without one (a plain .npz).
    preprocessing: PreprocessingContract | None = None
    #: Binary classification: the decision threshold on the second class's probability chosen
    #: in the checkpoint's round (a slice is that class when its probability is at least this);
    #: None: decide by argmax (no threshold stored).
    threshold: float | None = None
    #: What the threshold was chosen on: the sites' validation data, or the coordinator's
    #: threshold data (the job's ``threshold_data``).
    threshold_chosen_on: str = "the sites' validation data"


def output_names(payload: dict[str, Any], task: str, num_classes: int) -> tuple[str, ...]:
    """The checkpoint's ``class_names`` when it has one per output, else default names.

    Classification defaults to "0".."K-1"; segmentation to the names of unnamed mask values
    (common.data.arrays.unnamed_segments: background + foreground, or background + "1"..).
    """
    names = tuple(str(n) for n in payload.get("class_names") or ())
    if len(names) == num_classes:
        return names
    if is_segmentation(task):
        return unnamed_segments(num_classes)
    return tuple(str(k) for k in range(num_classes))


def decision_threshold(
    payload: dict[str, Any], task: str, num_classes: int, path: Path
) -> float | None:
    """The threshold stored in a binary classifier's checkpoint metrics, or None.

    Raises:
        DataFormatError: The stored threshold is not a number strictly between 0 and 1.
    """
    metrics = payload.get("metrics") or {}
    if task != "classification" or num_classes != 2 or not isinstance(metrics, dict):
        return None
    value = metrics.get(THRESHOLD)
    if value is None:
        return None
    # NaN and infinities fail the range check too
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise DataFormatError(path, f"stored {THRESHOLD} {value!r} is not a number in (0, 1)")
    return float(value)


def load_trained_model(path: Path) -> TrainedModel:
    """Read ``path`` (see :func:`common.checkpoint.save_checkpoint`) and rebuild its network.

    Raises:
        DataFormatError: The file is missing, is not a medfed checkpoint, its weights do not
            fit the network its job describes, or it was trained on caches of an older format.
        ConfigError: The checkpoint's job configuration is invalid.
    """
    if not path.is_file():
        raise DataFormatError(path, "checkpoint file not found")
    try:
        payload = load_checkpoint(path)
    except Exception as exc:  # torch.load raises many types on foreign or damaged files
        raise DataFormatError(path, f"not a medfed checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or any(key not in payload for key in _REQUIRED):
        raise DataFormatError(path, f"not a medfed checkpoint (needs keys {list(_REQUIRED)})")
    raw_job = payload["job"]
    stale = stale_format(raw_job.get("preprocessing") if isinstance(raw_job, dict) else None)
    if stale is not None:
        raise DataFormatError(
            path, f"trained on site caches {stale}: prepare each cache again and train again"
        )
    job = validate_model(FederationJob, raw_job, f"{path} (job)")
    shape = tuple(int(v) for v in payload["image_size"])
    if len(set(shape)) != 1 or len(shape) != len(job.spatial_shape):
        raise DataFormatError(path, f"image size {shape} is not the job's square or cube")
    in_channels, num_classes = int(payload["in_channels"]), int(payload["num_classes"])
    # the preprocessing contract's colour rule gives the channels; without one, grey
    expected = job.preprocessing.channels if job.preprocessing is not None else 1
    if in_channels != expected:
        raise DataFormatError(
            path,
            f"the network takes {in_channels} channels but its preprocessing gives {expected}",
        )
    network = build_model(job.model, in_channels, num_classes, shape, dp_enabled=False)
    try:
        network.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0]
        raise DataFormatError(path, f"weights do not fit a {job.model.name} ({reason})") from None
    network.eval()
    return TrainedModel(
        network=network,
        task=job.task,
        model_name=job.model.name,
        in_channels=in_channels,
        size=shape[0],
        output_names=output_names(payload, job.task, num_classes),
        round_number=int(payload.get("round", 0)),
        preprocessing=job.preprocessing,
        threshold=decision_threshold(payload, job.task, num_classes, path),
        **(
            {"threshold_chosen_on": "the coordinator's threshold data"}
            if job.threshold_data
            else {}
        ),
    )
