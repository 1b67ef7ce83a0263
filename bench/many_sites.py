"""Benchmark: round time and peak memory of `medfed-sim run` at 10 / 100 / 1000 simulated sites.

One run per site count, each a real `medfed-sim run` (its own SuperLink in simulation mode,
Ray, the one ServerApp and ClientApp) on the same data, split IID, without DP or SecAgg+.

Round time: when the progress lines appear in the run's run.log (polled every 0.5 s): round 1
from the ServerApp's "job ... round(s) to run" line (it includes the initial model's test evaluation
and Ray's first use of each actor), round 2 from round 1's line; both include the sites'
federated evaluation. ``fit`` is the coordinator's own ``fit_seconds`` of round 2 (first
message to the new global model). Memory: every 0.5 s the RSS and the PSS
(/proc/PID/smaps_rollup; shared pages split among the processes mapping them) of every
process descending from `medfed-sim run` (SuperLink, SuperExec, simulation runtime, ServerApp,
Ray's GCS, raylet and workers) are summed; the peak sums are reported. RSS sums count shared
pages (torch's libraries) once per process; PSS sums do not.

Usage: python bench/many_sites.py --data /work/shared/data/pneumoniamnist.npz
       [--sites 10 100 1000] [--rounds 2] [--site-fraction 1.0] [--out DIR]
"""

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
_START = re.compile(r"job \S+: \d+ round\(s\) to run")
_ROUND = re.compile(r"round (\d+)/\d+ \|")


@dataclass
class _Memory:
    """Peak summed RSS and PSS (MiB) of a process tree, sampled in a thread."""

    root: int
    peak_rss: float = 0.0
    peak_pss: float = 0.0
    peak_processes: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def _tree(self) -> list[int]:
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = [self.root], [self.root]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent]
            found += children
            frontier += children
        return found

    def sample(self) -> None:
        rss = pss = 0.0
        pids = self._tree()
        for pid in pids:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    name, _, value = line.partition(":")
                    if name == "Rss":
                        rss += int(value.split()[0]) / 1024
                    elif name == "Pss":
                        pss += int(value.split()[0]) / 1024
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_processes = max(self.peak_processes, len(pids))

    def run(self, log: Path, marks: dict[int, float]) -> None:
        """Sample until stopped; note when ``log`` first shows the start and each round."""
        seen = 0
        while not self.stop.wait(0.5):
            self.sample()
            with contextlib.suppress(OSError):
                text = log.read_text(encoding="utf-8", errors="replace")
                now = time.monotonic()
                for line in text[seen:].splitlines():
                    if _START.search(line):
                        marks.setdefault(0, now)
                    elif match := _ROUND.search(line):
                        marks.setdefault(int(match.group(1)), now)
                seen = text.rfind("\n") + 1


def run_once(data: Path, sites: int, rounds: int, fraction: float, out: Path) -> dict:
    """One `medfed-sim run` at ``sites`` sites: its round times, peak memory and totals."""
    run_dir = out / f"sites-{sites}"
    command = [
        str(BIN / "medfed-sim"), "run", "--data", str(data), "--sites", str(sites),
        "--rounds", str(rounds), "--local-epochs", "1", "--partition", "iid", "--no-dp",
        "--no-secure-aggregation", "--site-fraction", f"{fraction:g}", "--out", str(run_dir),
    ]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    memory = _Memory(process.pid)
    marks: dict[int, float] = {}
    sampler = threading.Thread(target=memory.run, args=(run_dir / "run.log", marks), daemon=True)
    sampler.start()
    assert process.stderr is not None
    for line in process.stderr:
        sys.stderr.write(line)
    code = process.wait()
    memory.stop.set()
    sampler.join()
    metrics = json.loads((run_dir / "metrics.json").read_text()) if code == 0 else {}
    table = json.loads((run_dir / "sites.json").read_text())
    train = metrics.get("federated", {}).get("train", {})
    return {
        "sites": sites,
        "exit_code": code,
        "train_images": sum(s["train"] for s in table),
        "sites_without_val": sum(1 for s in table if s["val"] == 0),
        "round_s": [
            round(marks[r] - marks[r - 1], 1)
            for r in range(1, rounds + 1)
            if r in marks and r - 1 in marks
        ],
        "fit_s": [round(train[r]["fit_seconds"], 1) for r in sorted(train, key=int)],
        "sites_trained_per_round": [
            sum(1 for s in metrics.get("sites", []) if s["phase"] == "train" and s["round"] == r)
            for r in range(1, rounds + 1)
        ],
        "total_s": round(time.monotonic() - started, 1),
        "peak_rss_mib": round(memory.peak_rss),
        "peak_pss_mib": round(memory.peak_pss),
        "peak_processes": memory.peak_processes,
    }


def main() -> None:
    """Run the site counts one after the other and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--site-fraction", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="many-sites-"))
    rows = [
        run_once(args.data.resolve(), n, args.rounds, args.site_fraction, out) for n in args.sites
    ]
    print(json.dumps(rows, indent=2))
    print(f"load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    header = (
        "| sites | trained per round | train images | sites without val | round s | fit s "
        "| total s | peak RSS MiB | peak PSS MiB | processes |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for row in rows:
        print(
            f"| {row['sites']} | {' / '.join(map(str, row['sites_trained_per_round']))} "
            f"| {row['train_images']} | {row['sites_without_val']} "
            f"| {' / '.join(map(str, row['round_s']))} | {' / '.join(map(str, row['fit_s']))} "
            f"| {row['total_s']} | {row['peak_rss_mib']} | {row['peak_pss_mib']} "
            f"| {row['peak_processes']} |"
        )


if __name__ == "__main__":
    main()
