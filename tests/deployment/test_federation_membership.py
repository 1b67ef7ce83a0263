"""Who is in a real federation (127.0.0.1): its processes, its doors, sites joining and dying.

Three provisioned site nodes and the coordinator, every process a real one (medfed-server start
-> flower-superlink + Fleet gateway; medfed-site start -> Flower's SuperNode -> SuperExec ->
ClientApp): how they run, who the Control API and the gateway refuse, a site enrolled later,
and a SecAgg+ round that loses a site mid-round. A federation of its own (test_secure_federation.py
runs the privacy jobs on another), so that the two modules run on two pytest workers at once;
every PID started here is stopped at the end of the module.
"""

import datetime
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from deployment_processes import (
    BIN,
    command_line,
    descendants,
    environment,
    kill,
    listening_addresses,
    stop_tree,
    wait_until,
)
from federation_setup import Federation, provision, running_federation, start_coordinator

from client.early_training import STASH_FOLDER
from client.site_node import TORCH_THREADS_ENV
from common.checkpoint import load_checkpoint
from common.federation_job import FederationJob
from common.flower_processes import free_port
from server.coordinator import CONNECTION, CoordinatorPaths, enrolled_sites, flwr_cli_json
from server.job_app import write_job_app
from server.provisioning import KitPaths, issue_server_certificate
from simulations.synthetic_lesions import write_synthetic_lesions

#: idle_s orders the files (tests/conftest.py), from the idle run's durations (2026-11-29): the
#: killed site 103 s, the rest about 100 s.
pytestmark = pytest.mark.e2e(idle_s=200)

SITES = ("hospital-a", "hospital-b", "hospital-c")
#: hospital-a's `medfed-site start --threads`: one more than every other process of the suite
#: gets (tests/conftest.py sets OMP_NUM_THREADS before the test files are imported).
THREADS = str(int(os.environ.get(TORCH_THREADS_ENV, "1")) + 1)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("membership")
    data = {site: root / f"site{index}.npz" for index, site in enumerate(SITES)}
    for index, path in enumerate(data.values()):
        write_synthetic_lesions(path, n_train=96, n_val=32, n_test=8, seed=index)
    options = {"hospital-a": ("--threads", THREADS)}
    with running_federation(root, data, site_options=lambda site: options.get(site, ())) as fed:
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
        if any(
            part in command for part in ("flower-", "flwr", "site_supernode", "superlink_process")
        )
        and len(command.split()) > 1
    }
    flower = {pid: found for pid, found in flower.items() if found[1]}  # still running
    names = {_program(command) for command, _ in flower.values()}
    assert {"server.superlink_process", "client.site_supernode", "flower-superexec"} <= names, names
    for command, env in flower.values():
        assert env.get("FLWR_TELEMETRY_ENABLED") == "0", command
        assert env.get("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION") == "1", command
    assert "--disable-runtime-dependency-installation" in command_line(superlink)
    # `--threads` reaches every process of that site's node: the ClientApp processes' torch.
    site_a = set(descendants(federation.sites["hospital-a"].pid)) & set(flower)
    assert {_program(flower[pid][0]) for pid in site_a} >= {"client.site_supernode"}, site_a
    for pid in site_a:
        assert flower[pid][1].get(TORCH_THREADS_ENV) == THREADS, flower[pid][0]
    others = set(flower) - site_a - {superlink}
    assert all(flower[pid][1].get(TORCH_THREADS_ENV) != THREADS for pid in others)


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


def test_a_restarted_coordinator_keeps_its_sites_and_they_rejoin(federation: Federation) -> None:
    """The SuperLink keeps its enrolled nodes on disk, its runs in memory (superlink_state.py).

    Restarted, it knows every enrolled site under the same node ID, and the running site nodes
    reconnect on their own: no hospital restarts anything. A key unregistered before the
    restart stays refused after it. The killed-site test after this one runs its SecAgg+ job
    on the restarted coordinator.
    """
    paths = CoordinatorPaths(federation.state)
    before = enrolled_sites(paths)
    revoked = next(node_id for node_id, name in before.items() if name == "hospital-d")
    flwr_cli_json(paths, "supernode", "unregister", revoked, CONNECTION)
    stop_tree(federation.coordinator)
    assert federation.coordinator.returncode is not None
    federation.coordinator = start_coordinator(
        federation.root, federation.kits, federation.state,
        federation.fleet_port, federation.control_port,
    )  # fmt: skip
    assert enrolled_sites(paths) == before  # hospital-d's kit, enrolled earlier, included
    nodes = {
        str(node["node-id"]): node["status"]
        for node in flwr_cli_json(paths, "supernode", "list", CONNECTION)["nodes"]
    }
    assert set(before) <= set(nodes)
    assert nodes[revoked] == "unregistered"
    wait_until(lambda: federation.online_nodes() == len(SITES), 180, "the sites back online")
    assert all(process.poll() is None for process in federation.sites.values())
    log = _site_attempt(federation, federation.kits / "sites" / "hospital-d", "revoked")
    assert "[code: 2004] Failed to activate SuperNode" in log


def _stop_training_at_setup(stash: Path, since: float) -> int:
    """SIGSTOP the training a site started after its setup reply (a marker newer than
    ``since``); its pid.

    The setup message's process writes the marker, then the child that trains writes its own
    pid there and the process exits (client/after_reply.py): the pid 0.2 s later is the child.
    """

    def markers() -> list[Path]:
        return [p for p in stash.glob("*.pending") if p.stat().st_mtime >= since]

    wait_until(lambda: stash.is_dir() and markers(), 60, "the site's training to start", 0.01)
    time.sleep(0.2)
    (marker,) = markers()  # gone if it trained in under 0.2 s: the test says so here
    trainer = int(json.loads(marker.read_text())["pid"])
    os.kill(trainer, signal.SIGSTOP)
    return trainer


def test_secagg_round_completes_when_a_site_is_killed_mid_round(federation: Federation) -> None:
    """Runs last: it kills hospital-c after the key shares went out, before its masked update.

    Its training (which starts with the setup stage) is stopped first, so that its masked
    update cannot leave before the kill.
    """
    started = time.time()
    run = federation.run_job("dropout", rounds=1, min_sites=2, epsilon=1.0)
    assert run.stdout is not None
    victim = federation.sites["hospital-c"]
    stash = federation.root / "state-hospital-c" / STASH_FOLDER
    trainer = _stop_training_at_setup(stash, started)
    lines = []
    for line in run.stdout:
        lines.append(line)
        if "Received encrypted key shares from 3" in line:
            # a crash: no goodbye to the SuperLink (the training child left the node's tree)
            kill([*descendants(victim.pid), trainer])
            break
    output = "".join(lines) + run.communicate(timeout=540)[0]
    assert victim.poll() is not None
    assert run.returncode == 0, output[-4000:]
    log = (federation.run_dir("dropout") / "run.log").read_text()
    assert "Received masked vectors from 2 clients" in log
    assert "Secure aggregation completed" in log
    assert load_checkpoint(federation.run_dir("dropout") / "global_model.pt")["round"] == 1
