"""Phases of every job a SuperLink ran, from its own database: start-up, SecAgg+ stages, rounds.

Flower's SuperLink keeps each ServerApp as a row of table ``task`` (pending, starting,
running, finished) and the ServerApp's log lines in ``task_logs`` with the time each arrived.
This prints, per job, when the ServerApp process ran and the seconds from its submission to
every round, SecAgg+ stage and evaluation line, and the gap since the previous one. Read-only:
it can watch a running federation (tests: ``<basetemp>/federation0/state/superlink.db``).

Usage: .venv/bin/python bench/job_phases.py STATE/superlink.db
"""

import argparse
import datetime
import re
import sqlite3
from pathlib import Path

__all__ = ["job_phases"]

#: ServerApp log lines that mark a phase.
PHASE = re.compile(r"\[Stage \d\]|\[ROUND \d+\]|configure_|aggregate_|Run finished")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Flower logs most lines twice (its console and its logger): keep the timestamped copy.
LOGGER_LINE = re.compile(r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d:(?:INFO|DEBUG|WARNING|ERROR):")


def _seconds(stamp: str | float | None) -> float | None:
    if stamp is None or isinstance(stamp, float):
        return stamp
    return datetime.datetime.fromisoformat(stamp).timestamp()


def job_phases(database: Path) -> list[str]:
    """One line per ServerApp and per phase line of its log, in order."""
    lines = []
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        tasks = db.execute(
            "SELECT task_id, run_id, pending_at, running_at, finished_at FROM task "
            "WHERE type = 'flwr-serverapp' ORDER BY pending_at"
        ).fetchall()
        for task_id, run_id, pending, running, finished in tasks:
            start = _seconds(pending)
            assert start is not None
            ran, ended = _seconds(running), _seconds(finished)
            lines.append(
                f"run {run_id}: ServerApp running after "
                f"{'-' if ran is None else f'{ran - start:.1f} s'}, finished after "
                f"{'-' if ended is None else f'{ended - start:.1f} s'}"
            )
            previous = start
            logs = db.execute(
                "SELECT timestamp, log FROM task_logs WHERE task_id = ? ORDER BY timestamp",
                (task_id,),
            )
            for stamp, log in logs:
                for line in ANSI.sub("", log).splitlines():
                    if LOGGER_LINE.match(line) and PHASE.search(line):
                        text = LOGGER_LINE.sub("", line).strip()
                        lines.append(f"  +{stamp - start:7.1f} s (+{stamp - previous:5.1f}) {text}")
                        previous = stamp
    return lines


def main() -> None:
    """Print the phases of every job in the database given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", type=Path, help="a SuperLink's superlink.db")
    for line in job_phases(parser.parse_args().database):
        print(line)


if __name__ == "__main__":
    main()
