"""The site's --sequences rule: parsing and matching a study's series to channels."""

import pytest

from common.data.dicom_scan import SeriesFiles
from common.data.sequences import group_by_sequence, parse_sequences
from common.errors import ConfigError


def _series(uid: str, study: str, description: str = "", protocol: str = "") -> SeriesFiles:
    return SeriesFiles(uid, study, "MR", description=description, protocol=protocol)


def test_series_are_grouped_by_study_and_matched_on_description_then_protocol() -> None:
    rule = parse_sequences("T1=*t1*, FLAIR=*flair*")
    studies = group_by_sequence(
        [
            _series("a", "s1", "AX T1 MPRAGE"),
            _series("b", "s1", "", "t2_flair_tra"),
            _series("c", "s1", "localizer"),
            _series("d", "s2", "T1 post"),
        ],
        rule,
    )
    first, second = studies
    assert [s.series_uid for s in first.series["FLAIR"]] == ["b"] and first.problem(
        rule.names
    ) == ""
    assert [s.series_uid for s in first.unmatched] == ["c"]
    assert second.problem(rule.names) == "study without sequence FLAIR (--sequences)"


@pytest.mark.parametrize(
    ("text", "message"),
    [("T1", "is not NAME=PATTERN"), ("T1=a,T1=b", "named twice"), ("T 1=x", "channel name")],
)
def test_a_bad_rule_names_the_option(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        parse_sequences(text)
    assert str(error.value).startswith("--sequences")
