"""Process exit codes of every medfed command, with the meaning docs/exit-codes.md shows."""

from enum import IntEnum

__all__ = ["EXIT_CODE_MEANINGS", "ExitCode", "exit_code_table"]


class ExitCode(IntEnum):
    """What a medfed command's exit status means (one table for every command)."""

    OK = 0
    INTERNAL_ERROR = 1
    CONFIG_ERROR = 2
    DATA_ERROR = 3
    MODEL_ERROR = 4
    BUDGET_REFUSED = 5
    RECORDS_BROKEN = 6
    JOB_INCOMPLETE = 7
    NOT_RUNNING = 8


#: One line per code: the single source of the documented table (docs/exit-codes.md).
EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "the command did what it was asked; files it could not use are listed with "
    "their reason",
    ExitCode.INTERNAL_ERROR: "a fault of medfed or of a process it started (a bug, Flower or "
    "Ray failing): one line names it, the traceback is in the debug log (or on the console "
    "with `--verbose`)",
    ExitCode.CONFIG_ERROR: "bad command-line or configuration value: an unknown option, a "
    "number out of range, an invalid job.toml or site.toml key, `--out` naming a file or a "
    "folder that cannot be created or written; the message names the option or file and the "
    "value",
    ExitCode.DATA_ERROR: "bad input data: a file or folder that does not exist or cannot be "
    "read, no usable image among the files (the tables and reports are still written), too "
    "few labelled studies to split",
    ExitCode.MODEL_ERROR: "the model cannot be trained with DP-SGD (e.g. BatchNorm with "
    "privacy on)",
    ExitCode.BUDGET_REFUSED: "a site refused to train because the job or round would pass its "
    "privacy budget (`max-epsilon`); nothing was spent on the refused round",
    ExitCode.RECORDS_BROKEN: "the site's privacy ledger or audit log fails verification (a "
    "broken hash chain, a head that does not match the integrity key, a ledger round without "
    "its audit entry)",
    ExitCode.JOB_INCOMPLETE: "a training job stopped before its last round (sites dropped out "
    "or refused), or a round trained on no site (every site failed: the message gives their "
    "reasons); the run folder keeps the completed rounds: continue with `--resume RUN_DIR`",
    ExitCode.NOT_RUNNING: "no coordinator is running with this `--state` folder "
    "(`medfed-server start` first)",
}


def exit_code_table() -> str:
    """The Markdown table of every exit code and its meaning, as docs/exit-codes.md holds it."""
    lines = ["| code | name | meaning |", "|---|---|---|"]
    lines += [
        f"| {code.value} | `{code.name.lower()}` | {EXIT_CODE_MEANINGS[code]} |"
        for code in ExitCode
    ]
    return "\n".join(lines)
