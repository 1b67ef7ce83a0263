"""Which series of a study is which MR sequence: the site's ``--sequences`` rule.

A rule ``T1=*t1*,T2=*t2*,FLAIR=*flair*`` names the channels in order and gives each a
case-insensitive shell pattern (fnmatch) matched against a series' SeriesDescription, then its
ProtocolName. A study is kept only when each channel matches exactly one of its series.
"""

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field

from common.data.dicom_scan import SeriesFiles
from common.errors import ConfigError

__all__ = ["SequenceRule", "StudySequences", "group_by_sequence", "parse_sequences"]

#: A channel name: letters, digits, '-' and '_' (it is written into the contract).
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_MAX_CHANNELS = 16


@dataclass(frozen=True)
class SequenceRule:
    """Channel names in order, each with its pattern."""

    patterns: tuple[tuple[str, str], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The channel names, in channel order."""
        return tuple(name for name, _ in self.patterns)

    def sequence_of(self, series: SeriesFiles) -> str | None:
        """The first channel whose pattern matches the description or protocol, or None."""
        for name, pattern in self.patterns:
            for value in (series.description, series.protocol):
                if value and fnmatch.fnmatch(value.lower(), pattern.lower()):
                    return name
        return None


def parse_sequences(text: str, option: str = "--sequences") -> SequenceRule:
    """``NAME=PATTERN,...`` as a rule; raises ConfigError naming the bad part."""
    patterns: list[tuple[str, str]] = []
    for part in text.split(","):
        name, sep, pattern = part.strip().partition("=")
        name, pattern = name.strip(), pattern.strip()
        if not sep or not name or not pattern:
            raise ConfigError(option, f"{part.strip()!r} is not NAME=PATTERN (e.g. T1=*t1*)")
        if not set(name) <= _NAME_CHARS:
            raise ConfigError(option, f"channel name {name!r}: use letters, digits, - and _")
        if name in dict(patterns):
            raise ConfigError(option, f"channel {name!r} is named twice")
        patterns.append((name, pattern))
    if len(patterns) > _MAX_CHANNELS:
        raise ConfigError(option, f"{len(patterns)} channels: at most {_MAX_CHANNELS}")
    return SequenceRule(tuple(patterns))


@dataclass
class StudySequences:
    """One study's series per channel, and why it cannot be used ("" when it can)."""

    study_uid: str
    series: dict[str, list[SeriesFiles]] = field(default_factory=dict)
    unmatched: list[SeriesFiles] = field(default_factory=list)

    def missing(self, names: tuple[str, ...]) -> list[str]:
        """The channels no series of the study matches, in channel order."""
        return [n for n in names if not self.series.get(n)]

    def problem(self, names: tuple[str, ...], zero_fill: bool = False) -> str:
        """Why the study is left out; "" when it can be used.

        A sequence matched twice always is a problem; a missing one only without
        ``zero_fill`` (``--missing-sequence zeros``), and a study with no sequence at all always.
        """
        missing = self.missing(names)
        if missing and (not zero_fill or len(missing) == len(names)):
            return f"study without sequence {', '.join(missing)} (--sequences)"
        twice = [n for n in names if len(self.series.get(n, [])) > 1]
        if twice:
            return f"study with several series matching {', '.join(twice)} (--sequences)"
        return ""


def group_by_sequence(
    all_series: Iterable[SeriesFiles], rule: SequenceRule
) -> list[StudySequences]:
    """The series grouped by study (in first-seen order), each assigned its channel."""
    studies: dict[str, StudySequences] = {}
    for series in all_series:
        study = studies.setdefault(series.study_uid, StudySequences(series.study_uid))
        name = rule.sequence_of(series)
        if name is None:
            study.unmatched.append(series)
        else:
            study.series.setdefault(name, []).append(series)
    return list(studies.values())
