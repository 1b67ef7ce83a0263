"""Benchmark helper: run a command and sum the CPU time of every process it starts, detached too.

Usage: .venv/bin/python bench/tree_cpu.py [--interval 1.0] -- COMMAND [ARGS...]

`/usr/bin/time` counts only the processes a command waits for; `medfed-sim run` starts the
Flower SuperLink, SuperExec and Ray detached, so their CPU (where the sites train) is lost.
This helper gives the command a unique marker in its environment, which every process it
starts inherits, samples ``/proc`` every ``--interval`` seconds, and sums each marked
process's own user + system time at its last sample. A process that lives less than one
interval, and what a process spends after its last sample, is missed: the sum is a lower
bound. Linux only. Prints one JSON line: wall seconds, CPU seconds, processes seen, exit code.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

_MARKER = "MEDFED_BENCH_TREE_CPU"
_PROC = Path("/proc")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used (OSError once it is gone)."""
    stat = (_PROC / str(pid) / "stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _marked_cpu(tag: bytes) -> dict[int, float]:
    """CPU seconds (user + system) of each live process whose environment carries ``tag``."""
    seen: dict[int, float] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if tag in (entry / "environ").read_bytes():
                seen[int(entry.name)] = process_cpu_seconds(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return seen


def main() -> None:
    """Run the command, sample its processes and print the totals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    value = uuid.uuid4().hex
    tag = f"{_MARKER}={value}".encode()
    last: dict[int, float] = {}
    start = time.monotonic()
    child = subprocess.Popen(command, env={**os.environ, _MARKER: value})
    finished: float | None = None
    while True:
        if finished is None and child.poll() is not None:
            finished = time.monotonic()
        live = _marked_cpu(tag)
        last.update(live)
        # processes that outlive the command are sampled until they exit, at most 60 s
        if finished is not None and (not live or time.monotonic() - finished > 60):
            break
        time.sleep(args.interval)
    assert finished is not None
    print(
        json.dumps(
            {
                "wall_s": round(finished - start, 1),
                "cpu_s": round(sum(last.values()), 1),
                "processes": len(last),
                "exit_code": child.returncode,
            }
        ),
        file=sys.stderr,
    )
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
