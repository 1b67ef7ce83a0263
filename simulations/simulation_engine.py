"""Run a job's app folder on Flower's Simulation Engine: a private SuperLink, then `flwr run`.

The same `flwr run` of the same app as on a real federation (`medfed-server run`), against a
SuperLink started here in simulation mode on free loopback ports; it and every process it
spawned (SuperExec, the simulation runtime, Ray) are stopped by PID at the end.
"""

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import tomli_w

from common.errors import ConfigError, MedfedError
from common.flower_processes import (
    flower_command,
    flower_environment,
    free_port,
    start_logged,
    stop_session,
    stream_to_log,
    wait_for_port,
)

__all__ = ["CONNECTION", "RAY_CPUS_ENV", "RAY_LOOPBACK_ENV", "run_on_simulation_engine"]

logger = logging.getLogger(__name__)

#: The connection's name in the run's own FLWR_HOME/config.toml.
CONNECTION = "medfed-sim"


def _superlink_command(port: int) -> list[str]:
    """A SuperLink in simulation mode; its Control, Fleet and runtime APIs share ``port``."""
    return [
        flower_command("flower-superlink"),
        "--insecure",
        "--simulation",
        "--isolation",
        "subprocess",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]


def _write_connection(flwr_home: Path, port: int) -> None:
    flwr_home.mkdir(parents=True, exist_ok=True)
    connection = {"address": f"127.0.0.1:{port}", "insecure": True}
    config = {"superlink": {"default": CONNECTION, CONNECTION: connection}}
    (flwr_home / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Flower streams each log line twice (coloured, then "MM/DD/YYYY HH:MM:SS:LEVEL:...").
_PLAIN_COPY = re.compile(r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d:")
#: What the console shows of the job's log unless --verbose: progress, warnings, errors.
_PROGRESS = re.compile(r"WARNING|ERROR|round \d+/\d+ \||^\S*INFO\S*\s+:\s+job ")
#: Flower's warnings that say nothing to a medfed user.
_NOISE = re.compile(
    r"default simulated SuperNodes changed|No fit_metrics_aggregation_fn"
    r"|Manually terminating ClientAppActor"
)


def _shown(line: str, verbose: bool) -> bool:
    if not line.strip():
        return False
    plain = _ANSI.sub("", line)
    return verbose or (bool(_PROGRESS.search(plain)) and not _NOISE.search(plain))


#: What makes the same message of different sites (or rounds) look different.
_SENDER = re.compile(r"^\(\S+ pid=\d+\)\s*|\d\d/\d\d/\d{4} \d\d:\d\d:\d\d:")


class _Echo:
    """Shows the job's log lines the console keeps, each repeated warning once.

    The simulated sites log the same warning every round (e.g. "the data has no patient
    keys"); it is shown the first time and counted after that, and :meth:`summarise` says how
    often it came. With ``verbose`` every line is shown.
    """

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.repeats: dict[str, int] = {}

    def __call__(self, line: str) -> None:
        if not _shown(line, self.verbose):
            return
        plain = _ANSI.sub("", line.rstrip())
        if not self.verbose and "WARNING" in plain:
            key = _SENDER.sub("", plain).strip()
            seen = key in self.repeats
            self.repeats[key] = self.repeats.get(key, 0) + 1
            if seen:
                return
        logger.info("%s", plain)

    def summarise(self, log_file: Path) -> None:
        """One line per warning shown once but logged again, with its count."""
        for message, count in self.repeats.items():
            if count > 1:
                logger.info(
                    "%d times in all (once shown above; every one in %s): %s",
                    count, log_file, message,
                )  # fmt: skip


#: Environment variable: how many CPUs a private Ray may use (default: every CPU this process
#: may run on). The sites trained at a time are these CPUs over --cpus-per-site.
RAY_CPUS_ENV = "MEDFED_SIM_CPUS"


def _private_ray_cpus(cpus_per_site: float) -> int:
    """The CPUs of a private Ray: :data:`RAY_CPUS_ENV`, else those this process may use."""
    raw = os.environ.get(RAY_CPUS_ENV)
    if raw is None:  # sched_getaffinity is Linux-only; macOS and Windows count all CPUs
        affinity = getattr(os, "sched_getaffinity", None)
        cpus = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    elif not raw.isdigit() or int(raw) < 1:
        raise ConfigError(RAY_CPUS_ENV, f"{raw!r} is not a whole number of CPUs >= 1")
    else:
        cpus = int(raw)
    if cpus_per_site > cpus:
        raise ConfigError(
            "--cpus-per-site",
            f"{cpus_per_site:g} CPUs per site exceed the {cpus} of this simulation's Ray: no "
            f"site could start (lower it, or raise {RAY_CPUS_ENV})",
        )
    return cpus


def _federation_config(num_sites: int, cpus_per_site: float, ray_address: str | None) -> str:
    """Flower's simulation settings: one SuperNode per site, and the CPUs of a private Ray."""
    config = (
        f"num-supernodes={num_sites} client-resources-num-cpus={cpus_per_site:g} "
        "client-resources-num-gpus=0"
    )
    if ray_address is None:  # Ray refuses resource sizes when it joins an existing cluster
        config += f" init-args-num-cpus={_private_ray_cpus(cpus_per_site)}"
    return config


#: A private Ray on loopback only. Ray has no authentication, and on Linux its GCS server,
#: raylet and workers listen on every interface; flwr 1.41 passes Ray only four init args
#: (CPUs, GPUs, logging), none of them an address, and Ray 2.55 replaces a node address of
#: 127.0.0.1 by the machine's outward one. Ray's switch for single-machine clusters (the
#: default on Windows and macOS) makes it take 127.0.0.1 as the node address, which every
#: server then binds to (checked by tests/simulations/test_ray_loopback.py).
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _ray_environment(env: dict[str, str], ray_address: str | None) -> str | None:
    """Point Ray at ``ray_address``, else at a fresh private folder; the folder to remove.

    Without an address RAY_ADDRESS is removed, so a run never joins a cluster by accident (a
    shell where `ray start` ran may export it); the private folder holds no
    ray_current_cluster file, so Ray starts its own instance, bound to loopback
    (:data:`RAY_LOOPBACK_ENV`). Its socket paths must stay under 107 bytes: the folder is a
    short one under the system's temporary directory.
    """
    env["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"
    if ray_address is not None:
        env["RAY_ADDRESS"] = ray_address
        return None
    env.pop("RAY_ADDRESS", None)
    env.update(RAY_LOOPBACK_ENV)
    ray_tmp = tempfile.mkdtemp(prefix="medfed-ray-")
    env["RAY_TMPDIR"] = ray_tmp
    return ray_tmp


def run_on_simulation_engine(
    app_dir: Path,
    run_dir: Path,
    num_sites: int,
    cpus_per_site: float = 1.0,
    verbose: bool = False,
    ray_address: str | None = None,
) -> int:
    """`flwr run` ``app_dir`` with ``num_sites`` simulated SuperNodes; returns flwr's exit code.

    Logs land in ``run_dir/run.log`` (the job) and ``run_dir/logs/superlink.log``. The
    simulation runtime starts a private Ray, or with ``ray_address`` joins that existing
    cluster (Ray's RAY_ADDRESS in its environment): the sites then run on the cluster's nodes,
    which must see ``run_dir`` at the same path and run the same medfed.
    """
    federation_config = _federation_config(num_sites, cpus_per_site, ray_address)
    port = free_port()
    flwr_home = run_dir / "flwr-home"
    _write_connection(flwr_home, port)
    env = flower_environment(flwr_home)
    ray_tmp = _ray_environment(env, ray_address)
    if ray_address is not None:
        logger.info("simulated sites run on the Ray cluster at %s", ray_address)
    superlink = start_logged(
        _superlink_command(port),
        run_dir / "logs" / "superlink.log",
        env,
        cwd=run_dir,
    )
    try:
        if not wait_for_port("127.0.0.1", port, 60.0, superlink):
            raise MedfedError(
                f"the simulation's SuperLink did not start; see {run_dir / 'logs/superlink.log'}"
            )
        command = [
            flower_command("flwr"), "run", str(app_dir), CONNECTION, "--stream",
            "--federation-config", federation_config,
        ]  # fmt: skip
        echo = _Echo(verbose)
        code = stream_to_log(
            command,
            env,
            run_dir,
            run_dir / "run.log",
            echo,
            keep=lambda line: not _PLAIN_COPY.match(line),
        )
        echo.summarise(run_dir / "run.log")
        return code
    finally:
        stop_session(superlink)
        if ray_tmp is not None:
            shutil.rmtree(ray_tmp, ignore_errors=True)
