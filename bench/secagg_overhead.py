"""Benchmark: SecAgg+ round time over plain FedAvg at 3 and 10 sites, and upload per site.

Everything runs for real on 127.0.0.1, in one run: `medfed-server provision/start`, then
`medfed-site start` per site (TLS, site keys, DP-SGD), then for each site count a plain and
a SecAgg+ job of the same model and data. Round time is the coordinator's `fit_seconds` (first
message of the round to the new global model; evaluation excluded), the mean over the job's
rounds and over its rounds after the first. Upload is what each site sent through the Fleet
gateway (its traffic log, protobuf bodies before TLS) during the job, per round, over the
model's float32 size.

Usage: .venv/bin/python bench/secagg_overhead.py [--sites 3 10] [--rounds 2] [--train-images 96]
    [--image-size 32] [--idle-seconds 30] [--out DIR]
"""

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench.tree_cpu import process_cpu_seconds
from client.site_supernode import WAITS
from common.federation_job import FederationJob
from common.flower_processes import free_port, free_ports
from common.models import build_model
from server.coordinator import CoordinatorPaths, online_sites
from simulations.synthetic_lesions import write_synthetic_lesions

BIN = Path(sys.executable).parent
JOB = """name = "{name}"
rounds = {rounds}
min_sites = {sites}
image_size = {image_size}
[train]
learning_rate = 0.003
[privacy]
target_epsilon = 8.0
[secure_aggregation]
enabled = {secure}
"""


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1.0)
    raise TimeoutError(what)


#: What each site uploads in one round, in order: the replies to the round's messages.
PLAIN_REPLIES = ("fit reply", "evaluate reply")
SECURE_REPLIES = (
    "SecAgg+ setup reply (public keys)",
    "SecAgg+ share-keys reply (encrypted shares)",
    "fit reply (masked vectors)",
    "SecAgg+ unmask reply (key shares)",
    "evaluate reply",
)
#: The Fleet calls that are not a reply, by what they do.
OTHER_CALLS = {
    "pull-messages": "message pulls (polling)",
    "pull-object": "object pulls (requests for the parts of received messages)",
    "confirm-message-received": "acknowledgements",
    "send-node-heartbeat": "heartbeats",
    "get-run": "run and app lookups",
    "get-fab": "run and app lookups",
}


@dataclass(frozen=True)
class JobResult:
    """One job's round times and what a site uploaded per round, by call."""

    round_seconds: list[float]
    calls: dict[str, tuple[float, float]]

    @property
    def fit_seconds(self) -> float:
        """Mean over the job's rounds."""
        return sum(self.round_seconds) / len(self.round_seconds)

    @property
    def later_fit_seconds(self) -> float:
        """Mean over the rounds after the first (the first round's, if it is the only one)."""
        later = self.round_seconds[1:] or self.round_seconds
        return sum(later) / len(later)

    @property
    def upload_bytes(self) -> float:
        """Every Fleet call's body."""
        return sum(size for _, size in self.calls.values())

    @property
    def payload_bytes(self) -> float:
        """The replies' objects alone (``push-object``)."""
        return sum(size for what, (_, size) in self.calls.items() if what.endswith("objects"))


def _upload_by_call(
    traffic: Path, start: float, end: float, rounds: int, secure: bool
) -> dict[str, tuple[float, float]]:
    """Mean (calls, bytes) a site sent per round, by what the calls carried.

    Flower 1.41 uploads a reply as one ``push-messages`` call (the envelope: metadata and the
    ids of the message's object tree) followed by one ``push-object`` call per object (records,
    arrays, array chunks); a site's calls are sequential, so each ``push-object`` belongs to
    the site's last ``push-messages``. Replies are named by their place in the round. Bytes
    are HTTP bodies (protobuf), as the gateway logs them: HTTP headers and TLS are not counted.
    """
    kinds = SECURE_REPLIES if secure else PLAIN_REPLIES
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    replies: dict[str, int] = defaultdict(int)  # per site: replies pushed so far
    with traffic.open() as handle:
        for row in csv.DictReader(handle):
            site = row["site_key"]
            if not start <= float(row["time"]) <= end or site == "-":
                continue
            rpc = row["rpc"]
            if rpc == "push-messages":
                replies[site] += 1
            if rpc in ("push-messages", "push-object"):
                index = (replies[site] - 1) % len(kinds)
                what = f"{kinds[index]}: {'envelope' if rpc == 'push-messages' else 'objects'}"
            else:
                what = OTHER_CALLS.get(rpc, rpc)
            totals[what][0] += 1
            totals[what][1] += int(row["bytes_up"])
    per_site_round = len(replies) * rounds
    return {what: (c / per_site_round, b / per_site_round) for what, (c, b) in totals.items()}


def _idle_load(state: Path, sites: int, seconds: float) -> str:
    """The SuperLink's and the gateway's share of a core while ``sites`` idle sites poll."""
    time.sleep(WAITS.follow_up_window_s + 2)  # every site back at its idle pace
    pids = json.loads((state / "coordinator.json").read_text())
    processes = {"SuperLink": pids["superlink_pid"], "gateway": pids["coordinator_pid"]}
    traffic = state / "logs" / "fleet-traffic.csv"
    before = {name: process_cpu_seconds(pid) for name, pid in processes.items()}
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    used = {name: process_cpu_seconds(pid) - before[name] for name, pid in processes.items()}
    with traffic.open() as handle:
        calls = sum(start <= float(row["time"]) <= end for row in csv.DictReader(handle))
    rate = calls / (end - start)
    shares = ", ".join(f"{name} {cpu / (end - start):.3f} of a core" for name, cpu in used.items())
    per_call = 1000 * used["SuperLink"] / max(calls, 1)
    return (
        f"{sites} idle sites: {rate:.1f} Fleet calls/s; {shares}; "
        f"{per_call:.1f} ms of SuperLink CPU per call"
    )


def _job(
    root: Path, state: Path, sites: int, secure: bool, rounds: int, image_size: int
) -> "JobResult":
    name = f"{'secagg' if secure else 'plain'}-{sites}"
    job_file = root / f"{name}.toml"
    job_file.write_text(
        JOB.format(
            name=name,
            rounds=rounds,
            sites=sites,
            secure=str(secure).lower(),
            image_size=image_size,
        )
    )
    start = time.time()
    subprocess.run(
        [str(BIN / "medfed-server"), "run", str(job_file), "--state", str(state)],
        check=True,
        capture_output=True,
        timeout=3600,
    )
    end = time.time()
    (run_dir,) = (state / "runs").glob(f"*-{name}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    fit = [metrics["federated"]["train"][str(r)]["fit_seconds"] for r in range(1, rounds + 1)]
    calls = _upload_by_call(state / "logs" / "fleet-traffic.csv", start, end, rounds, secure)
    return JobResult(fit, calls)


def main() -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--train-images",
        type=int,
        default=96,
        help="training images per site (synthetic lesions); a round's training grows with "
        "them, SecAgg+'s three extra exchanges do not",
    )
    parser.add_argument("--image-size", type=int, default=32, help="pixels a side")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=0.0,
        help="before each site count's jobs, measure the coordinator's CPU this long while "
        "every site only asks for work (default: not measured)",
    )
    parser.add_argument("--out", type=Path, default=None, help="keep logs here (default: temp)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="medfed-secagg-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    most = max(args.sites)
    fleet, control = free_ports(2)
    names = [f"site-{i:02d}" for i in range(most)]
    spec = root / "federation.toml"
    spec.write_text(
        f'[coordinator]\naddress = "127.0.0.1"\nfleet-port = {fleet}\n'
        + "".join(f'[[sites]]\nname = "{n}"\n' for n in names)
    )
    run = [str(BIN / "medfed-server"), "provision", "--federation", str(spec), "--out"]
    subprocess.run([*run, str(root / "kits")], check=True, capture_output=True)
    for settings in (root / "kits" / "sites").glob("*/site.toml"):  # room for all four jobs
        text = settings.read_text().replace("max-epsilon = 8.0", "max-epsilon = 100.0")
        # The plain job is the comparison: these sites allow rounds without SecAgg+.
        text = text.replace(
            "require-secure-aggregation = true", "require-secure-aggregation = false"
        )
        settings.write_text(text)
    state = root / "state"
    processes = [
        subprocess.Popen(
            [
                str(BIN / "medfed-server"),
                "start",
                "--kits",
                str(root / "kits"),
                "--state",
                str(state),
                "--host",
                "127.0.0.1",
                "--fleet-port",
                str(fleet),
                "--control-port",
                str(control),
            ],  # fmt: skip
            stdout=(root / "coordinator.out").open("wb"),
            stderr=subprocess.STDOUT,
        )
    ]
    size = (args.image_size, args.image_size)
    model = build_model(FederationJob().model, 1, 2, size, dp_enabled=True)
    model_bytes = 4 * sum(t.numel() for t in model.state_dict().values())
    results: dict[tuple[int, bool], JobResult] = {}
    try:
        _wait(lambda: (state / "coordinator.json").is_file(), 120, "coordinator")
        started = 0
        for sites in sorted(args.sites):
            for index in range(started, sites):
                data = write_synthetic_lesions(
                    root / f"{names[index]}.npz",
                    n_train=args.train_images,
                    n_val=32,
                    n_test=4,
                    image_size=args.image_size,
                    seed=index,
                )
                processes.append(
                    subprocess.Popen(
                        [
                            str(BIN / "medfed-site"),
                            "start",
                            "--kit",
                            str(root / "kits" / "sites" / names[index]),
                            "--data",
                            str(data),
                            "--port",
                            str(free_port()),
                            "--logs",
                            str(root / f"logs-{names[index]}"),
                            "--state",
                            str(root / f"state-{names[index]}"),
                        ],  # fmt: skip
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.STDOUT,
                    )
                )
            started = sites
            _wait(
                lambda n=sites: online_sites(CoordinatorPaths(state)) >= n,
                300,
                f"{sites} online sites",
            )
            if args.idle_seconds > 0:
                print(_idle_load(state, sites, args.idle_seconds), flush=True)
            for secure in (False, True):
                result = _job(root, state, sites, secure, args.rounds, args.image_size)
                results[(sites, secure)] = result
                rounds = ", ".join(f"{t:.1f}" for t in result.round_seconds)
                print(f"{sites} sites, {'SecAgg+' if secure else 'plain'}: "
                      f"{result.fit_seconds:.1f} s/round ({rounds}), {result.upload_bytes:.0f} "
                      "bytes up per site-round", flush=True)  # fmt: skip
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\nmodel: {model_bytes / 4:.0f} float32 parameters = {model_bytes} bytes; "
          f"{args.train_images} training images of {args.image_size}x{args.image_size} "
          "per site")  # fmt: skip
    print("| sites | plain s/round | SecAgg+ s/round | SecAgg+/plain | rounds 2+: plain / "
          "SecAgg+ (ratio) | upload/site/round over the float32 model, all calls (plain / "
          "SecAgg+) | payloads only |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for sites in sorted(args.sites):
        plain, secure = results[(sites, False)], results[(sites, True)]
        later = secure.later_fit_seconds / plain.later_fit_seconds
        print(
            f"| {sites} | {plain.fit_seconds:.1f} | {secure.fit_seconds:.1f} | "
            f"{secure.fit_seconds / plain.fit_seconds:.2f} | {plain.later_fit_seconds:.1f} / "
            f"{secure.later_fit_seconds:.1f} ({later:.2f}) | "
            f"{plain.upload_bytes / model_bytes:.3f} / {secure.upload_bytes / model_bytes:.3f} | "
            f"{plain.payload_bytes / model_bytes:.3f} / {secure.payload_bytes / model_bytes:.3f} |"
        )
    for (sites, secure), result in sorted(results.items()):
        print(f"\n{sites} sites, {'SecAgg+' if secure else 'plain FedAvg'}: upload per site-round")
        print("| call | calls | bytes | over the float32 model |\n| --- | --- | --- | --- |")
        for what, (count, size) in sorted(result.calls.items(), key=lambda item: -item[1][1]):
            print(f"| {what} | {count:.1f} | {size:,.0f} | {size / model_bytes:.4f} |")
        total = result.upload_bytes
        print(f"| **all calls** | | **{total:,.0f}** | **{total / model_bytes:.4f}** |")


if __name__ == "__main__":
    main()
