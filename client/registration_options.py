"""`prepare`'s registration and sequence options, checked once into RegistrationOptions."""

from pathlib import Path

from common.data.preprocessing_contract import MISSING_SEQUENCE_CHOICES, MissingSequence
from common.data.registered_prepare import REGISTER_CHOICES, RegistrationOptions
from common.data.registration import TRANSFORM_KINDS, TransformKind
from common.data.sequences import parse_sequences
from common.errors import ConfigError

__all__ = ["contract_channels", "registration_options"]


def registration_options(
    register: str,
    reference: Path | None,
    transform: str,
    sequences: str | None,
    missing_sequence: str = "skip",
    presence_channels: bool | None = None,
) -> RegistrationOptions | None:
    """The options, or None when neither registration nor sequences were asked for.

    ``presence_channels`` (mask channels of zero-filled sequences) defaults to
    ``missing_sequence == "zeros"``; predict gives the model's contract's value.

    Raises:
        ConfigError: an unknown value, a reference without ``--register reference`` or the
            reverse, a bad ``--sequences`` rule, or ``--missing-sequence zeros`` without
            ``--sequences``; the message names the option.
    """
    if register not in REGISTER_CHOICES:
        raise ConfigError("--register", f"{register!r} is not one of {list(REGISTER_CHOICES)}")
    if transform not in TRANSFORM_KINDS:
        raise ConfigError("--transform", f"{transform!r} is not one of {list(TRANSFORM_KINDS)}")
    if (register == "reference") != (reference is not None):
        raise ConfigError("--reference", "give it exactly when --register reference")
    if reference is not None and not reference.is_file():
        raise ConfigError("--reference", f"{reference}: no such file")
    rule = parse_sequences(sequences) if sequences else None
    if missing_sequence not in MISSING_SEQUENCE_CHOICES:
        raise ConfigError(
            "--missing-sequence",
            f"{missing_sequence!r} is not one of {list(MISSING_SEQUENCE_CHOICES)}",
        )
    if missing_sequence != "skip" and rule is None:
        raise ConfigError("--missing-sequence", f"{missing_sequence}: give --sequences too")
    if register == "none" and rule is None:
        return None
    kind: TransformKind = "rigid" if transform == "rigid" else "affine"
    missing: MissingSequence = "zeros" if missing_sequence == "zeros" else "skip"
    presence = missing == "zeros" if presence_channels is None else presence_channels
    return RegistrationOptions(register, kind, reference, rule, missing, presence)


def contract_channels(
    options: RegistrationOptions | None,
) -> tuple[tuple[str, ...], str, MissingSequence, bool]:
    """(channel names, registration, missing-sequence rule, presence channels) for the contract."""
    if options is None:
        return (), "none", "skip", False
    names = options.sequences.names if options.sequences is not None else ()
    return names, options.contract_value(), options.missing_sequence, options.presence_channels
