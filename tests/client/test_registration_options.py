"""`prepare`'s --register, --reference, --transform and --sequences, checked before any read."""

from pathlib import Path

import pytest

from client.registration_options import contract_channels, registration_options
from common.errors import ConfigError


@pytest.mark.parametrize(
    ("register", "reference", "transform", "sequences", "option"),
    [
        ("mni", None, "affine", None, "--register"),
        ("reference", None, "affine", None, "--reference"),
        ("atlas", Path("ref.nii.gz"), "affine", None, "--reference"),
        ("atlas", None, "bspline", None, "--transform"),
        ("none", None, "rigid", "T1", "--sequences"),
    ],
)
def test_bad_options_are_refused_naming_the_option(
    register: str, reference: Path | None, transform: str, sequences: str | None, option: str
) -> None:
    with pytest.raises(ConfigError) as error:
        registration_options(register, reference, transform, sequences)
    assert str(error.value).startswith(option)


@pytest.mark.parametrize(("sequences", "missing"), [("T1=*t1*", "fill"), (None, "zeros")])
def test_a_bad_missing_sequence_rule_is_refused(sequences: str | None, missing: str) -> None:
    with pytest.raises(ConfigError) as error:
        registration_options("none", None, "rigid", sequences, missing)
    assert str(error.value).startswith("--missing-sequence")


def test_what_the_contract_records() -> None:
    assert registration_options("none", None, "affine", None) is None
    assert contract_channels(None) == ((), "none", "skip", False)
    options = registration_options("atlas", None, "rigid", "T1=*t1*,FLAIR=*flair*")
    assert contract_channels(options) == (("T1", "FLAIR"), "atlas:rigid", "skip", False)
    plain = registration_options("none", None, "affine", "T1=*t1*,T2=*t2*", "zeros")
    assert contract_channels(plain) == (("T1", "T2"), "none", "zeros", True)
    # predict replays the model's contract: a zeros cache written without mask channels
    older = registration_options("none", None, "affine", "T1=*t1*,T2=*t2*", "zeros", False)
    assert contract_channels(older) == (("T1", "T2"), "none", "zeros", False)
