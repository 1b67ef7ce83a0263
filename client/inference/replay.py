"""The preprocessing ``medfed predict`` applies: the model's own contract, or the options."""

import math
from dataclasses import dataclass

from client.inference.model import TrainedModel
from common.data.dicom_prepare import PreprocessingConfig
from common.errors import ConfigError, DataFormatError

__all__ = ["PreprocessingOverrides", "replay_preprocessing"]

#: What the options default to for a model without a contract (prepare's own defaults).
_DEFAULTS = PreprocessingConfig()


@dataclass(frozen=True)
class PreprocessingOverrides:
    """--window, --ct-window and --spacing as given (None: not given)."""

    window: str | None = None
    ct_window: str | None = None
    spacing: float | None = None


def _refuse(option: str, given: object, prepared: object) -> ConfigError:
    return ConfigError(
        option,
        f"{given!r} but the model's training data were prepared with {prepared!r} (its "
        "preprocessing contract): leave the option out",
    )


def replay_preprocessing(
    model: TrainedModel, given: PreprocessingOverrides, source: str
) -> PreprocessingConfig:
    """The configuration prepare used for the model's data (``source`` names the checkpoint).

    With a contract in the checkpoint each option given must agree with it; without one the
    options apply, with prepare's defaults.

    Raises:
        ConfigError: An option disagrees with the model's contract.
        DataFormatError: The contract cannot be replayed by this medfed, or its image size is
            not the network's.
    """
    contract = model.preprocessing
    if contract is None:
        return PreprocessingConfig(
            window=given.window or _DEFAULTS.window,
            ct_window=given.ct_window or _DEFAULTS.ct_window,
            target_spacing=given.spacing,
            size=model.size,
        )
    if contract.size != model.size:
        raise DataFormatError(
            source, f"preprocessing size {contract.size} differs from the network's {model.size}"
        )
    try:
        config = PreprocessingConfig.of_contract(contract)
    except ValueError as exc:
        raise DataFormatError(source, str(exc)) from None
    if given.window is not None and given.window != contract.window:
        raise _refuse("--window", given.window, contract.window)
    if given.ct_window is not None and given.ct_window != contract.ct_window:
        raise _refuse("--ct-window", given.ct_window, contract.ct_window or "no CT window")
    spacing = contract.spacing_mm
    if given.spacing is not None and (spacing is None or not math.isclose(given.spacing, spacing)):
        raise _refuse("--spacing", given.spacing, spacing or "no resampling to a spacing")
    return config
