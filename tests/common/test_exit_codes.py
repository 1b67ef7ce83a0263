"""The one exit-code table: every code documented in docs/exit-codes.md, as the code defines it."""

from pathlib import Path

import pytest

from common import errors
from common.exit_codes import EXIT_CODE_MEANINGS, ExitCode, exit_code_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "exit-codes.md"


def test_every_exit_code_has_a_meaning() -> None:
    assert set(EXIT_CODE_MEANINGS) == set(ExitCode)


def test_the_documented_table_is_the_generated_one() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert exit_code_table() in text, (
        "docs/exit-codes.md differs from common/exit_codes.py: paste exit_code_table() there"
    )
    for code in ExitCode:
        assert f"| {code.value} | `{code.name.lower()}` |" in text


def test_codes_are_distinct_and_stay_below_the_signal_range() -> None:
    values = [code.value for code in ExitCode]
    assert len(values) == len(set(values)) and max(values) < 126


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ConfigError("job.toml", "rounds = 0"), ExitCode.CONFIG_ERROR),
        (errors.DataFormatError("x.npz", "missing"), ExitCode.DATA_ERROR),
        (errors.ModelNotPrivacyCompatibleError("BatchNorm"), ExitCode.MODEL_ERROR),
        (errors.BudgetRefusedError("over budget"), ExitCode.BUDGET_REFUSED),
        (errors.RecordsBrokenError("chain"), ExitCode.RECORDS_BROKEN),
        (errors.JobIncompleteError("stopped"), ExitCode.JOB_INCOMPLETE),
        (errors.CoordinatorNotRunningError("none"), ExitCode.NOT_RUNNING),
        (errors.MedfedError("flwr failed"), ExitCode.INTERNAL_ERROR),
    ],
)
def test_each_error_class_ends_with_its_documented_code(
    error: errors.MedfedError, code: ExitCode
) -> None:
    assert error.exit_code is code
