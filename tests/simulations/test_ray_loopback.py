"""medfed-sim's private Ray listens on loopback only: Ray has no authentication.

A real tiny simulation runs in a thread while this test reads, from /proc, the listening TCP
sockets of every process below it (SuperLink, SuperExec, the simulation runtime, Ray's GCS
server, raylet and workers) until the job ends.
"""

import os
import threading
import time
from pathlib import Path

import pytest

from common.federation_job import FederationJob
from simulations.runner import run_simulation_job
from simulations.simulation_settings import SimulationSettings
from simulations.synthetic_lesions import write_synthetic_lesions

pytestmark = pytest.mark.e2e

#: /proc/net/tcp6 spelling of the IPv4-mapped loopback ::ffff:127.0.0.1, and of ::1.
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def _listening() -> dict[str, str]:
    """Socket inode -> hex local address of every listening TCP socket (IPv4 and IPv6)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                found[fields[9]] = fields[1].split(":")[0]
    return found


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat:
            tree.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    return tree


def _descendants(root: int) -> list[int]:
    tree, found, frontier = _children(), [], [root]
    while frontier:
        children = tree.get(frontier.pop(), [])
        found += children
        frontier += children
    return found


def _sockets_by_process() -> dict[tuple[int, str], set[str]]:
    """(pid, name) -> local addresses it listens on, for every process below this one."""
    listening = _listening()
    seen: dict[tuple[int, str], set[str]] = {}
    for pid in _descendants(os.getpid()):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:  # ended meanwhile, or a descriptor closed while listed
            continue
        inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
        addresses = {listening[inode] for inode in inodes if inode in listening}
        if addresses:
            seen[(pid, name)] = addresses
    return seen


def test_a_local_simulation_listens_on_loopback_only(tmp_path: Path) -> None:
    data = write_synthetic_lesions(tmp_path / "d.npz", n_train=40, n_val=8, n_test=8,
                                   image_size=16, seed=1)  # fmt: skip
    job = FederationJob.model_validate(
        {"rounds": 1, "min_sites": 2, "privacy": {"enabled": False},
         "secure_aggregation": {"enabled": False}}
    )  # fmt: skip
    settings = SimulationSettings(data=data, sites=2)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_simulation_job(job, settings, tmp_path / "run", [])
        except BaseException as error:  # noqa: BLE001 (reported by the test below)
            failure.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    seen: dict[tuple[int, str], set[str]] = {}
    while worker.is_alive():
        for process, addresses in _sockets_by_process().items():
            seen.setdefault(process, set()).update(addresses)
        time.sleep(0.3)
    worker.join()
    assert not failure, failure
    names = {name for _, name in seen}
    assert "gcs_server" in names and "raylet" in names, names  # Ray was seen listening
    exposed = {process: a - LOOPBACK for process, a in seen.items() if a - LOOPBACK}
    assert not exposed, exposed
