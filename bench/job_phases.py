"""Phases of every job a coordinator ran, from its jobs' logs: SecAgg+ stages, rounds, evaluation.

Each job's folder under ``STATE/runs/`` holds the ServerApp's log (``run.log``), whose logger
lines carry the time to the second. This prints, per job, the seconds from its first logged
line to every round, SecAgg+ stage and evaluation line, and the gap since the previous one.
Read-only: it can watch a running federation (tests: ``<basetemp>/federation0/state``).

Usage: .venv/bin/python bench/job_phases.py STATE
"""

import argparse
import datetime
import re
from pathlib import Path

__all__ = ["job_phases"]

#: ServerApp log lines that mark a phase.
PHASE = re.compile(r"\[Stage \d\]|\[ROUND \d+\]|configure_|aggregate_|Run finished")
#: Flower logs most lines twice (its console and its logger): keep the timestamped copy.
LOGGER_LINE = re.compile(r"^(\d\d/\d\d/\d{4} \d\d:\d\d:\d\d):(?:INFO|DEBUG|WARNING|ERROR):(.*)$")


def job_phases(state: Path) -> list[str]:
    """One line per job and per phase line of its log, in order."""
    lines = []
    for log in sorted(state.glob("runs/*/run.log")):
        lines.append(f"job {log.parent.name}:")
        start = previous = None
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            found = LOGGER_LINE.match(line)
            if found is None:
                continue
            stamp = datetime.datetime.strptime(found[1], "%m/%d/%Y %H:%M:%S").timestamp()
            start = stamp if start is None else start
            if PHASE.search(found[2]):
                gap = stamp - (start if previous is None else previous)
                lines.append(f"  +{stamp - start:6.0f} s (+{gap:4.0f}) {found[2].strip()}")
                previous = stamp
    return lines


def main() -> None:
    """Print the phases of every job in the coordinator state folder given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("state", type=Path, help="a coordinator's --state folder")
    for line in job_phases(parser.parse_args().state):
        print(line)


if __name__ == "__main__":
    main()
