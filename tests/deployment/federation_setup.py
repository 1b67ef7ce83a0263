"""A provisioned federation on 127.0.0.1 for the deployment tests: kits, coordinator, site nodes.

Every process is a real one (medfed-server start -> flower-superlink + Fleet gateway;
medfed-site start -> flower-supernode -> SuperExec -> ClientApp); :func:`running_federation`
stops every PID it started when the test module is done with it.
"""

import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from deployment_processes import BIN, stop_trees, wait_until

from common.flower_processes import free_port, free_ports
from server.coordinator import CoordinatorPaths, online_sites

#: The job the deployment tests submit (TLS, site auth, SecAgg+ and DP). A SecAgg+ stage ends
#: when its last site answers (a killed site is answered for by Flower once its heartbeat
#: lapses); the stage timeout only bounds a site that is alive but slow, as DP training is when
#: the suite's workers share two cores, so it is set far above an idle stage (10-40 s).
JOB = """
name = "{name}"
rounds = {rounds}
min_sites = {min_sites}
image_size = 32
seed = 3

[train]
batch_size = 32
learning_rate = 0.003

[privacy]
enabled = true
target_epsilon = {epsilon}
unit = "image"  # the synthetic .npz sites know no patients

[secure_aggregation]
enabled = true
timeout_s = 300.0
"""


@dataclass
class Federation:
    root: Path
    kits: Path
    state: Path
    fleet_port: int
    control_port: int
    coordinator: subprocess.Popen
    sites: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_site(
        self,
        kit: Path,
        data: Path,
        name: str,
        *extra: str,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen:
        logs = self.root / f"logs-{name}"
        command = [
            str(BIN / "medfed-site"), "start", "--kit", str(kit), "--data", str(data),
            "--port", str(free_port()), "--logs", str(logs),
            "--state", str(self.root / f"state-{name}"), *extra,
        ]  # fmt: skip
        return subprocess.Popen(
            command,
            stdout=(self.root / f"{name}.out").open("wb"),
            stderr=subprocess.STDOUT,
            cwd=self.root,
            env=None if env is None else dict(env),
        )

    def online_nodes(self) -> int:
        """Site nodes online now; -1 when the Flower CLI asking it timed out (a loaded machine:
        the callers wait for a count, so they ask again)."""
        try:
            return online_sites(CoordinatorPaths(self.state))
        except subprocess.TimeoutExpired:
            return -1

    def submit(self, name: str, job_toml: str) -> subprocess.Popen:
        """``medfed-server run`` of the job ``job_toml`` (its output piped, as text)."""
        job = self.root / f"{name}.toml"
        job.write_text(job_toml)
        return subprocess.Popen(
            [str(BIN / "medfed-server"), "run", str(job), "--state", str(self.state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.root,
        )

    def run_job(
        self, name: str, rounds: int, min_sites: int, epsilon: float = 8.0
    ) -> subprocess.Popen:
        job = JOB.format(name=name, rounds=rounds, min_sites=min_sites, epsilon=epsilon)
        return self.submit(name, job)

    def run_dir(self, name: str) -> Path:
        (found,) = (self.state / "runs").glob(f"*-{name}")
        return found


def provision(root: Path, fleet_port: int, sites: tuple[str, ...], out: Path) -> None:
    spec = root / f"{out.name}.toml"
    body = f'[coordinator]\naddress = "127.0.0.1"\nfleet-port = {fleet_port}\n'
    body += "".join(f'[[sites]]\nname = "{site}"\n' for site in sites)
    spec.write_text(body)
    subprocess.run(
        [str(BIN / "medfed-server"), "provision", "--federation", str(spec), "--out", str(out)],
        check=True,
        capture_output=True,
    )


def start_coordinator(
    root: Path, kits: Path, state: Path, fleet_port: int, control_port: int
) -> subprocess.Popen:
    """``medfed-server start`` (output appended to root/coordinator.out), once it is up."""
    (state / "coordinator.json").unlink(missing_ok=True)
    coordinator = subprocess.Popen(
        [
            str(BIN / "medfed-server"),
            "start",
            "--kits",
            str(kits),
            "--state",
            str(state),
            "--host",
            "127.0.0.1",
            "--fleet-port",
            str(fleet_port),
            "--control-port",
            str(control_port),
        ],  # fmt: skip
        stdout=(root / "coordinator.out").open("ab"),
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    try:
        wait_until(lambda: (state / "coordinator.json").is_file(), 180, "the coordinator")
    except BaseException:
        stop_trees([coordinator])
        raise
    return coordinator


@contextmanager
def running_federation(
    root: Path,
    sites: Mapping[str, Path],
    edit_site_toml: Callable[[str, str], str] = lambda _site, text: text,
    site_env: Callable[[str], Mapping[str, str] | None] = lambda _site: None,
    site_options: Callable[[str], Sequence[str]] = lambda _site: (),
) -> Iterator[Federation]:
    """Provision ``sites`` (name -> data), start the coordinator and every site node, wait
    until all are online; stop them all on exit. ``edit_site_toml`` is each hospital's own
    edit of its site.toml, ``site_env`` the environment of its node (None: this process's),
    ``site_options`` more options of its `medfed-site start`."""
    fleet_port, control_port = free_ports(2)
    kits = root / "kits"
    provision(root, fleet_port, tuple(sites), kits)
    for site in sites:
        settings = kits / "sites" / site / "site.toml"
        settings.write_text(edit_site_toml(site, settings.read_text()))
    state = root / "state"
    coordinator = start_coordinator(root, kits, state, fleet_port, control_port)
    fed = Federation(root, kits, state, fleet_port, control_port, coordinator)
    try:
        for site, data in sites.items():
            kit = kits / "sites" / site
            fed.sites[site] = fed.start_site(
                kit, data, site, *site_options(site), env=site_env(site)
            )
        wait_until(lambda: fed.online_nodes() == len(sites), 300, f"{len(sites)} online sites")
        yield fed
    finally:
        stop_trees(fed.sites.values())  # the sites leave together, then the coordinator
        stop_trees([fed.coordinator])  # the one running now: a test may have restarted it
        assert fed.coordinator.returncode is not None
