"""A real federation on 127.0.0.1: provisioned kits, the coordinator, three site nodes.

Every process is a real one (medfed-server start -> flower-superlink + Fleet gateway;
medfed-site start -> flower-supernode -> SuperExec -> ClientApp), and every PID started
here is stopped at the end of the module.
"""

import datetime
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from deployment_processes import (
    BIN,
    command_line,
    descendants,
    environment,
    free_port,
    kill,
    listening_addresses,
    stop_tree,
    wait_until,
)
from federation_setup import Federation, provision, running_federation

from client.audit_log import AuditLog
from client.privacy_ledger import LEDGER_FILE, PrivacyLedger
from common.checkpoint import load_checkpoint
from common.federation_job import FederationJob
from common.models import build_model
from server.coordinator import CoordinatorPaths, flwr_cli_json
from server.job_app import write_job_app
from server.provisioning import KitPaths, issue_server_certificate
from server.server_app import state_digest
from simulations.synthetic_lesions import write_synthetic_lesions

pytestmark = pytest.mark.e2e

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


def _program(command: str) -> str:
    """The script or module a ``python ...`` command line runs."""
    words = command.split()
    return words[2] if words[1] == "-m" else words[1].rsplit("/", 1)[-1]


def test_every_flower_process_runs_without_telemetry_or_runtime_installs(
    federation: Federation,
) -> None:
    started = [federation.coordinator.pid, *(p.pid for p in federation.sites.values())]
    superlink = json.loads((federation.state / "coordinator.json").read_text())["superlink_pid"]
    # One snapshot: a short-lived ClientApp process may end between two reads of /proc.
    commands = {
        pid: command_line(pid) for root in [*started, superlink] for pid in descendants(root)
    }
    flower = {
        pid: (command, environment(pid))
        for pid, command in commands.items()
        if any(part in command for part in ("flower-", "flwr", "site_supernode"))
        and len(command.split()) > 1
    }
    flower = {pid: found for pid, found in flower.items() if found[1]}  # still running
    names = {_program(command) for command, _ in flower.values()}
    assert {"flower-superlink", "client.site_supernode", "flower-superexec"} <= names, names
    for command, env in flower.values():
        assert env.get("FLWR_TELEMETRY_ENABLED") == "0", command
        assert env.get("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION") == "1", command
    assert "--disable-runtime-dependency-installation" in command_line(superlink)


def test_control_api_is_on_loopback_only_and_refused_to_site_credentials(
    federation: Federation,
) -> None:
    assert listening_addresses(federation.control_port) == {"127.0.0.1"}
    # A site's view: its kit's CA and the address in its site.toml.
    site_home = federation.root / "site-flwr-home"
    site_home.mkdir(exist_ok=True)
    ca = federation.kits / "sites" / "hospital-a" / "ca.crt"
    (site_home / "config.toml").write_text(
        '[superlink]\ndefault = "fed"\n\n[superlink.fed]\n'
        f'address = "127.0.0.1:{federation.fleet_port}"\nroot-certificates = "{ca}"\n'
    )
    app = write_job_app(federation.root / "rogue-run", FederationJob(name="rogue"))
    attempts = {
        "list runs": ["ls", "fed"],
        "register a node": [
            "supernode", "register", str(federation.kits / "sites/hospital-a/site.key.pub"), "fed",
        ],
        "start a run": ["run", str(app), "fed"],
    }  # fmt: skip
    env = {"FLWR_HOME": str(site_home), "FLWR_TELEMETRY_ENABLED": "0", "PATH": str(BIN)}
    for what, args in attempts.items():
        result = subprocess.run(
            [str(BIN / "flwr"), *args, "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        reply = json.loads(result.stdout)
        assert reply["success"] is False, what
        assert "403 Forbidden" in reply["error-message"], (what, reply)
    # The coordinator, on its own machine, can.
    coordinator = CoordinatorPaths(federation.state)
    assert flwr_cli_json(coordinator, "ls", "medfed")["success"] is True


def test_two_round_job_with_tls_site_auth_secagg_and_dp(federation: Federation) -> None:
    run = federation.run_job("trial", rounds=2, min_sites=3)
    output, _ = run.communicate(timeout=540)
    assert run.returncode == 0, output[-4000:]
    run_dir = federation.run_dir("trial")
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


def test_the_same_job_toml_runs_in_a_simulation_with_the_same_accounting(
    federation: Federation,
) -> None:
    """`medfed-sim run --config` takes the coordinator's job.toml as it is, on the same data.

    The hospitals draw secret training seeds (DP noise must not be predictable), so the two
    global models differ by that noise; what is deterministic must agree exactly: the job, the
    model's structure, each site's samples, noise multiplier and epsilon in every round.
    """
    caches = federation.root / "sim-caches"  # the three hospitals' own data, as site caches
    for index in range(len(SITES)):
        (caches / f"site-{index}").mkdir(parents=True, exist_ok=True)
        shutil.copy(federation.root / f"site{index}.npz", caches / f"site-{index}" / "dataset.npz")
    deployed = federation.run_dir("trial")
    simulated = federation.root / "sim-trial"
    result = subprocess.run(
        [str(BIN / "medfed-sim"), "run", "--config", str(federation.root / "trial.toml"),
         "--data", str(caches), "--sites", "3", "--partition", "site", "--out", str(simulated)],
        capture_output=True, text=True, timeout=600, cwd=federation.root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
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
    federation: Federation,
) -> None:
    chromium = _chromium()
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "medfed-server"), "dashboard", "--kits", str(federation.kits),
         "--state", str(federation.state), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/runs/{federation.run_dir('trial').name}"
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
    return subprocess.run(
        [str(BIN / "medfed-site"), *args], capture_output=True, text=True, timeout=120
    )


def _site_attempt(federation: Federation, kit: Path, name: str, *extra: str) -> str:
    """Start a site node that should be refused; its log once it has exited."""
    node = federation.start_site(kit, federation.root / "site0.npz", name, *extra)
    try:
        node.wait(timeout=120)
    finally:
        stop_tree(node)
    assert node.returncode != 0
    return (federation.root / f"logs-{name}" / "supernode.log").read_text()


def test_a_key_that_was_not_provisioned_is_refused(federation: Federation) -> None:
    rogue = federation.root / "rogue-kit"
    shutil.copytree(federation.kits / "sites" / "hospital-a", rogue)
    key = ec.generate_private_key(ec.SECP384R1())
    (rogue / "site.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    log = _site_attempt(federation, rogue, "rogue")
    assert "[code: 2004] Failed to activate SuperNode" in log


def test_a_site_with_another_federations_ca_cannot_connect(federation: Federation) -> None:
    other = federation.root / "other-kits"
    provision(federation.root, federation.fleet_port, ("hospital-a",), other)
    log = _site_attempt(federation, other / "sites" / "hospital-a", "wrong-ca")
    assert "CERTIFICATE_VERIFY_FAILED" in log


def _expire(kits: KitPaths) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    issue_server_certificate(
        kits, "127.0.0.1", not_valid_before=past - datetime.timedelta(days=30), not_valid_after=past
    )


def _tamper(kits: KitPaths) -> None:
    cert_file = kits.coordinator / "server.crt"
    der = bytearray(x509.load_pem_x509_certificate(cert_file.read_bytes()).public_bytes(
        serialization.Encoding.DER
    ))  # fmt: skip
    der[-8] ^= 0x01  # inside the CA's signature: the certificate no longer verifies
    cert = x509.load_der_x509_certificate(bytes(der))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("damage", [_expire, _tamper], ids=["expired", "tampered"])
def test_a_gateway_with_an_expired_or_tampered_certificate_is_refused(
    federation: Federation, damage
) -> None:
    bad = federation.root / f"kits-{damage.__name__}"
    shutil.copytree(federation.kits, bad)
    damage(KitPaths(bad))
    port = free_port()
    gateway = subprocess.Popen(
        [
            str(BIN / "python"),
            "-c",
            "import sys, uvicorn; from server.fleet_gateway import create_fleet_gateway; "
            "uvicorn.run(create_fleet_gateway(sys.argv[1], sys.argv[2]), host='127.0.0.1', "
            "port=int(sys.argv[3]), ssl_certfile=sys.argv[4], ssl_keyfile=sys.argv[5])",
            f"https://127.0.0.1:{federation.control_port}",
            str(bad / "coordinator" / "ca.crt"),
            str(port),
            str(bad / "coordinator" / "server.crt"),
            str(bad / "coordinator" / "server.key"),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: "127.0.0.1" in listening_addresses(port), 30, "the gateway")
        log = _site_attempt(
            federation,
            federation.kits / "sites" / "hospital-a",
            f"cert-{damage.__name__}",
            "--superlink",
            f"127.0.0.1:{port}",
        )
    finally:
        stop_tree(gateway)
    assert "CERTIFICATE_VERIFY_FAILED" in log


def test_a_job_resumes_after_its_server_app_is_killed_and_a_site_refuses_beyond_its_budget(
    federation: Federation,
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

    resumed = subprocess.run(
        [str(BIN / "medfed-server"), "run", "--resume", str(run_dir),
         "--state", str(federation.state)],
        capture_output=True, text=True, timeout=540,
    )  # fmt: skip
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


def test_a_site_provisioned_later_joins_after_enrol_and_old_kits_still_work(
    federation: Federation,
) -> None:
    provision(federation.root, federation.fleet_port, (*SITES, "hospital-d"), federation.kits)
    enrol = subprocess.run(
        [str(BIN / "medfed-server"), "enrol", "--kits", str(federation.kits),
         "--state", str(federation.state)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert enrol.returncode == 0, enrol.stderr
    assert "enrolled: hospital-d" in enrol.stdout
    late = federation.start_site(
        federation.kits / "sites" / "hospital-d", federation.root / "site0.npz", "hospital-d"
    )
    try:
        wait_until(lambda: federation.online_nodes() == len(SITES) + 1, 120, "hospital-d online")
    finally:
        stop_tree(late)
    wait_until(lambda: federation.online_nodes() == len(SITES), 120, "hospital-d offline")
    assert all(process.poll() is None for process in federation.sites.values())


def test_secagg_round_completes_when_a_site_is_killed_mid_round(federation: Federation) -> None:
    """Runs last: it kills hospital-c after the key shares went out, before its masked update."""
    run = federation.run_job("dropout", rounds=1, min_sites=2, epsilon=1.0)
    assert run.stdout is not None
    victim = federation.sites["hospital-c"]
    lines = []
    for line in run.stdout:
        lines.append(line)
        if "Received encrypted key shares from 3" in line:
            kill(descendants(victim.pid))  # a crash: no goodbye to the SuperLink
            break
    output = "".join(lines) + run.communicate(timeout=540)[0]
    assert victim.poll() is not None
    assert run.returncode == 0, output[-4000:]
    log = (federation.run_dir("dropout") / "run.log").read_text()
    assert "Received masked vectors from 2 clients" in log
    assert "Secure aggregation completed" in log
    assert load_checkpoint(federation.run_dir("dropout") / "global_model.pt")["round"] == 1
