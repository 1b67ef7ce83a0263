"""How ``medfed predict`` aligns studies: prepare's registration options, from the contract.

A model whose training data were registered (``prepare --register``) or stacked sequences
(``--sequences``) carries that in its preprocessing contract. The site's sequence rule (its
patterns are the site's own series names, so the contract keeps only the channel names) and a
``--register reference`` volume (the contract keeps its hash) are given again at predict and
checked against the contract.
"""

from pathlib import Path

from client.registration_options import registration_options
from common.data.preprocessing_contract import PreprocessingContract
from common.data.registered_prepare import RegistrationOptions
from common.errors import ConfigError

__all__ = ["StudyReplay", "study_replay"]


class StudyReplay:
    """The options a contract asks for; ``options`` is None while ``--sequences`` is missing."""

    def __init__(self, contract: PreprocessingContract, options: RegistrationOptions | None):
        self.contract = contract
        self.options = options

    def for_dicom(self) -> RegistrationOptions:
        """The options DICOM inputs are aligned with.

        Raises:
            ConfigError: the model stacks sequences and ``--sequences`` was not given.
        """
        if self.options is None:
            raise ConfigError(
                "--sequences",
                f"the model's channels are the sequences {self.contract.channel_names}: give "
                "the rule its training data were prepared with (NAME=PATTERN,... in that order)",
            )
        return self.options


def _split_registration(value: str) -> tuple[str, str]:
    """``atlas:affine`` -> (atlas, affine); ``reference:rigid:<sha>`` -> (reference, rigid)."""
    parts = value.split(":")
    return parts[0], parts[1] if len(parts) > 1 else "affine"


def study_replay(
    contract: PreprocessingContract | None, sequences: str | None, reference: Path | None
) -> StudyReplay | None:
    """None when the model's data were neither registered nor stacked from sequences.

    Raises:
        ConfigError: ``--sequences`` or ``--reference`` given for a model that needs neither,
            channel names other than the contract's, or a reference other than the one the
            training data were registered to; the message names the option.
    """
    stacked = contract is not None and bool(contract.channel_names)
    if contract is None or (contract.registration == "none" and not stacked):
        for option, value in (("--sequences", sequences), ("--reference", reference)):
            if value is not None:
                raise ConfigError(
                    option, "the model's training data were neither registered nor stacked "
                    "from sequences (its preprocessing contract): leave it out",
                )  # fmt: skip
        return None
    register, transform = _split_registration(contract.registration)
    if sequences is None and stacked:
        if reference is not None and register != "reference":
            raise ConfigError("--reference", f"the model was registered with {register!r}")
        return StudyReplay(contract, None)
    if register == "reference" and reference is None:
        raise ConfigError(
            "--reference", f"the model's training data were registered to a reference volume "
            f"({contract.registration}): give that volume",
        )  # fmt: skip
    options = registration_options(
        register, reference, transform, sequences, contract.missing_sequence,
        contract.presence_channels,
    )  # fmt: skip
    assert options is not None  # registered, or a rule was given
    names = options.sequences.names if options.sequences is not None else ()
    if ",".join(names) != contract.channel_names:
        raise ConfigError(
            "--sequences",
            f"channels {','.join(names) or 'none'}, but the model's are "
            f"{contract.channel_names or 'one unnamed channel'} (in that order)",
        )
    if options.contract_value() != contract.registration:
        raise ConfigError(
            "--reference",
            f"{reference}: not the volume the training data were registered to (the contract "
            f"records {contract.registration})",
        )
    return StudyReplay(contract, options)
