"""A real federation on 127.0.0.1: provisioned kits, the coordinator, three site nodes.

Every process is a real one (medfed-server start -> flower-superlink + Fleet gateway;
medfed-site start -> flower-supernode -> SuperExec -> ClientApp), and every PID started
here is stopped at the end of the module. The privacy jobs run here (the 2-round TLS /
SecAgg+ / DP job, the same job.toml in a simulation at the same time, the resumed job and a
budget refusal); test_federation_membership.py checks processes, refusals and a killed site on
a federation of its own.
"""

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from deployment_processes import (
    BIN,
    command_line,
    descendants,
    kill,
    listening_addresses,
    stop_tree,
    stop_trees,
    wait_until,
)
from federation_setup import JOB, Federation, running_federation
from warm_command_lines import run_command_line

from client.audit_log import AuditLog
from client.early_training import STASH_FOLDER
from client.privacy_ledger import LEDGER_FILE, PrivacyLedger
from common.checkpoint import load_checkpoint
from common.federation_job import FederationJob
from common.flower_processes import free_port
from common.models import build_model
from server.server_app import state_digest
from simulations.synthetic_lesions import write_synthetic_lesions

#: idle_s orders the files (tests/conftest.py), from the idle run's durations (2026-11-29):
#: setup 16 s, the trial job 276 s beside its simulation (140 s), resume 201 s.
pytestmark = pytest.mark.e2e(idle_s=530)

SITES = ("hospital-a", "hospital-b", "hospital-c")
#: Each site's privacy budget (site.toml [limits] max-epsilon), over all jobs on its data.
BUDGETS = {"hospital-a": 30.0, "hospital-b": 9.0, "hospital-c": 30.0}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("federation")
    data = {site: root / f"site{index}.npz" for index, site in enumerate(SITES)}
    for index, path in enumerate(data.values()):
        write_synthetic_lesions(path, n_train=96, n_val=32, n_test=8, seed=index)

    def budget(site: str, text: str) -> str:  # what each hospital's privacy officer set
        return text.replace("max-epsilon = 8.0", f"max-epsilon = {BUDGETS[site]}")

    with running_federation(root, data, budget) as fed:
        yield fed


@dataclass(frozen=True)
class Trial:
    """The "trial" job's two runs: on the hospitals' nodes and in a simulation of them."""

    deployed: Path
    simulated: Path


@pytest.fixture(scope="module")
def trial(federation: Federation) -> Iterator[Trial]:
    """`medfed-server run trial.toml` and `medfed-sim run --config trial.toml` at the same time.

    The simulation takes the coordinator's job.toml as it is, on copies of the hospitals' data
    as site caches; both mostly wait (Flower's polls, process starts), so they overlap.
    """
    caches = federation.root / "sim-caches"  # the three hospitals' own data, as site caches
    for index in range(len(SITES)):
        (caches / f"site-{index}").mkdir(parents=True, exist_ok=True)
        shutil.copy(federation.root / f"site{index}.npz", caches / f"site-{index}" / "dataset.npz")
    run = federation.submit("trial", JOB.format(name="trial", rounds=2, min_sites=3, epsilon=8.0))
    simulated = federation.root / "sim-trial"
    sim_log = federation.root / "sim-trial.out"
    with sim_log.open("wb") as sim_out:
        simulation = subprocess.Popen(
            [str(BIN / "medfed-sim"), "run", "--config", str(federation.root / "trial.toml"),
             "--data", str(caches), "--sites", "3", "--partition", "site",
             "--out", str(simulated)],
            stdout=sim_out, stderr=subprocess.STDOUT, cwd=federation.root,
        )  # fmt: skip
    try:  # the two share the cores: each is given the time both would take one after the other
        output, _ = run.communicate(timeout=900)
        simulation.wait(timeout=900)
    finally:
        stop_trees([run, simulation])
    assert run.returncode == 0, output[-4000:]
    assert simulation.returncode == 0, sim_log.read_text()[-3000:]
    yield Trial(federation.run_dir("trial"), simulated)


#: Its setup starts the federation and runs the trial job and its simulation (each bounded by
#: its own timeout): more than pytest's 600 s per test when the machine is loaded.
@pytest.mark.timeout(1800)
def test_two_round_job_with_tls_site_auth_secagg_and_dp(
    federation: Federation, trial: Trial
) -> None:
    run_dir = trial.deployed
    log = (run_dir / "run.log").read_text()
    assert "Secure aggregation completed" in log
    assert log.count("[Stage 2] Received masked vectors from 3 clients") == 2  # one per round

    metrics = json.loads((run_dir / "metrics.json").read_text())
    train = [s for s in metrics["sites"] if s["phase"] == "train"]
    assert {(s["round"], s["site"]) for s in train} == {(r, s) for r in (1, 2) for s in SITES}
    assert len({s["node_id"] for s in train}) == 3
    assert all(0 < s["epsilon"] <= 8.5 for s in train)
    assert all(s["epsilon"] > t["epsilon"] for s in train for t in train
               if s["site"] == t["site"] and s["round"] == 2 and t["round"] == 1)  # fmt: skip
    assert set(metrics["federated"]["evaluate"]) == {"1", "2"}

    checkpoint = load_checkpoint(run_dir / "global_model.pt")
    assert checkpoint["round"] == 2
    job = FederationJob.model_validate(checkpoint["job"])
    torch.manual_seed(job.seed)
    initial = build_model(job.model, 1, 2, (32, 32), dp_enabled=True).state_dict()
    moved = [
        float((checkpoint["state_dict"][name].float() - tensor.float()).abs().max())
        for name, tensor in initial.items()
    ]
    assert max(moved) > 1e-4  # the sites' (securely summed) updates reached the global model
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())

    # Each site recorded both rounds in its own ledger and every message in its audit trail.
    for site in SITES:
        ledger = PrivacyLedger(federation.root / f"state-{site}" / LEDGER_FILE, site)
        assert [(row.job, row.round) for row in ledger.rows()] == [("trial", 1), ("trial", 2)]
        assert ledger.spent(1e-5) <= 8.0 + 1e-6  # calibrated to the target, not above it
        shown = _site_command("privacy", "--kit", str(federation.kits / "sites" / site),
                              "--state", str(federation.root / f"state-{site}"))  # fmt: skip
        assert shown.returncode == 0 and f"limit {BUDGETS[site]:g}" in shown.stdout
        audit = _site_command("audit", "--state", str(federation.root / f"state-{site}"))
        assert audit.returncode == 0 and "hash chain intact" in audit.stdout
        entries = [e for _, e, _, _ in AuditLog(federation.root / f"state-{site}" /
                                                "audit-log.sqlite").entries()]  # fmt: skip
        assert entries[0].direction == "in" and entries[0].kind == "job-config"
        sent = [e for e in entries if e.direction == "out"]
        # per round: 4 SecAgg+ stages (train) and one evaluation
        assert len(sent) == 10
        assert sum(e.kind.startswith("train") for e in sent) == 8
        masked = [e for e in sent if e.kind.endswith("collect_masked_vectors")]
        assert len(masked) == 2 and all(e.epsilon is not None for e in masked)
        assert all(e.bytes > 0 and len(e.sha256) == 64 for e in sent)
        # Each round trained after its setup reply had left (during the key exchange), and
        # the masked-vector stage took the result: nothing unmasked is left behind.
        for server_round, spent in zip((1, 2), ledger.rows(), strict=True):
            setup, share, masked_vector = (
                next(e.recorded_at for e in sent if e.round == server_round and e.kind == kind)
                for kind in ("train/secagg-setup", "train/secagg-share_keys",
                             "train/secagg-collect_masked_vectors")
            )  # fmt: skip
            assert setup < spent.recorded_at < masked_vector and share < masked_vector
        assert list((federation.root / f"state-{site}" / STASH_FOLDER).iterdir()) == []


def test_the_same_job_toml_runs_in_a_simulation_with_the_same_accounting(trial: Trial) -> None:
    """`medfed-sim run --config` takes the coordinator's job.toml as it is, on the same data.

    The hospitals draw secret training seeds (DP noise must not be predictable), so the two
    global models differ by that noise; what is deterministic must agree exactly: the job, the
    model's structure, each site's samples, noise multiplier and epsilon in every round.
    """
    deployed, simulated = trial.deployed, trial.simulated
    assert "Secure aggregation completed" in (simulated / "run.log").read_text()

    def job_of(run_dir: Path) -> dict:
        job = load_checkpoint(run_dir / "global_model.pt")["job"]
        return {key: value for key, value in job.items() if key != "class_names"}

    assert job_of(simulated) == job_of(deployed)

    def accounting(run_dir: Path, names: dict[str, str]) -> set[tuple]:
        sites = json.loads((run_dir / "metrics.json").read_text())["sites"]
        return {
            (names[s["site"]], s["round"], s["num-examples"], round(s["noise-multiplier"], 9),
             round(s["epsilon"], 9))
            for s in sites if s["phase"] == "train"
        }  # fmt: skip

    hospitals = {site: f"site-{index}" for index, site in enumerate(SITES)}
    same = {f"site-{index}": f"site-{index}" for index in range(len(SITES))}
    assert accounting(simulated, same) == accounting(deployed, hospitals)
    models = [load_checkpoint(d / "global_model.pt")["state_dict"] for d in (simulated, deployed)]
    assert {k: v.shape for k, v in models[0].items()} == {k: v.shape for k, v in models[1].items()}
    assert all(torch.isfinite(t).all() for model in models for t in model.values())


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed: .ci/run installs it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return found


def test_the_dashboard_shows_the_runs_rounds_sites_and_privacy_in_chromium(
    federation: Federation, trial: Trial
) -> None:
    chromium = _chromium()
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "medfed-server"), "dashboard", "--kits", str(federation.kits),
         "--state", str(federation.state), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/runs/{trial.deployed.name}"
    browser = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={federation.root / 'chromium-profile'}",
    ]  # fmt: skip
    screenshot = federation.root / "dashboard.png"
    try:
        wait_until(lambda: "127.0.0.1" in listening_addresses(port), 60, "the dashboard")
        dom = subprocess.run(
            [*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120
        ).stdout
        subprocess.run(
            [*browser, f"--screenshot={screenshot}", "--window-size=1200,1500", url],
            capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        stop_tree(server)
    print(f"dashboard screenshot: {screenshot}")
    assert "round 2 of 2 completed" in dom
    for site in SITES:
        assert site in dom
    assert dom.count("online") >= len(SITES)  # the live table of connected sites
    assert "Privacy spent per site" in dom and f"{SITES[1]} budget" in dom
    assert dom.count("<svg") == 4 and "bytes sent to the coordinator" in dom
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _site_command(*args: str) -> subprocess.CompletedProcess[str]:
    return run_command_line("medfed-site", *args, timeout=120)


def test_a_job_resumes_after_its_server_app_is_killed_and_a_site_refuses_beyond_its_budget(
    federation: Federation, trial: Trial
) -> None:
    """One job for two behaviours (each 2-round job costs minutes): the resume after a kill,
    and hospital-b's budget refusal in both rounds, before and after the resume."""
    # hospital-b spent 8 on "trial"; one round of this job would take it to 9.47 (composed by
    # its ledger) past its 9 (a and c allow 30), so it refuses every round and the job goes on
    # with the other two. The job's epsilon stays within the limit (above it, a site refuses
    # the job itself, before its ledger is asked).
    run = federation.run_job("resumable", rounds=2, min_sites=2, epsilon=8.0)
    assert run.stdout is not None
    for line in run.stdout:
        if "round 1/2" in line:  # round 1 evaluated and checkpointed; round 2 starts now
            break
    superlink = json.loads((federation.state / "coordinator.json").read_text())["superlink_pid"]
    server_apps = [p for p in descendants(superlink) if "flwr-serverapp" in command_line(p)]
    assert server_apps
    kill(server_apps)  # the coordinator's job process dies mid-job
    stop_tree(run)
    run_dir = federation.run_dir("resumable")
    interrupted = load_checkpoint(run_dir / "global_model.pt")
    assert interrupted["round"] == 1

    resumed = run_command_line(
        "medfed-server", "run", "--resume", run_dir, "--state", federation.state, timeout=540
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    digest = state_digest(interrupted["state_dict"])
    assert (
        f"resumes after round 1/2 from global model {digest}" in (run_dir / "run.log").read_text()
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["federated"]["evaluate"]) == {"1", "2"}
    trained = sorted((s["round"], s["site"]) for s in metrics["sites"] if s["phase"] == "train")
    # no round lost or twice; hospital-b in neither
    assert trained == sorted((r, s) for r in (1, 2) for s in ("hospital-a", "hospital-c"))
    assert load_checkpoint(run_dir / "global_model.pt")["round"] == 2
    # Under SecAgg+ a refusal reaches the coordinator as an error reply with the site's reason.
    refusals = [f for f in metrics["failures"] if "refuses this round" in f["reason"]]
    assert {f["round"] for f in refusals} == {1, 2}
    assert all("hospital-b" in f["reason"] and "above its limit 9" in f["reason"]
               for f in refusals)  # fmt: skip
    ledger = PrivacyLedger(federation.root / "state-hospital-b" / LEDGER_FILE, "hospital-b")
    assert "resumable" not in {row.job for row in ledger.rows()}  # the refusal spent nothing
