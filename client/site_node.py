"""Start this hospital's SuperNode from its startup kit: TLS to the coordinator, its own key.

The site's limits (data path, privacy budget) go into the node config here, on the site's
machine; the ClientApp reads them from there and a job cannot change them.
"""

import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from client.integrity_key import ensure_integrity_key
from client.site_limits import (
    DATA_PATH,
    DEFAULT_DELTA,
    DELTA,
    INTEGRITY_KEY,
    MAX_EPSILON,
    PRIVACY_UNIT,
    REQUIRE_DP,
    REQUIRE_SECURE_AGGREGATION,
    SITE_NAME,
    STATE_DIR,
    checked_delta,
    checked_epsilon,
    checked_unit,
)
from client.site_records import require_intact
from common.data.loading import load_dataset
from common.errors import ConfigError
from common.flower_processes import flower_environment, start_logged

__all__ = [
    "PROMPT_LAUNCH_ENV",
    "TORCH_THREADS_ENV",
    "SUPERNODE_LAUNCH",
    "SiteKit",
    "start_site_node",
    "supernode_command",
]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


#: Flower's SuperNode with shorter polling waits (client/site_supernode.py).
SUPERNODE_LAUNCH = (sys.executable, "-m", "client.site_supernode")


@dataclass(frozen=True)
class SiteKit:
    """A site's startup kit as written by `medfed-server provision`."""

    root: Path
    name: str
    superlink: str
    max_epsilon: float
    #: The site's delta: every job is composed at it; a job asking a larger one is refused.
    delta: float = DEFAULT_DELTA
    require_secure_aggregation: bool = True
    require_dp: bool = True
    #: "patient": the site refuses jobs whose DP protects less than a whole patient.
    privacy_unit: str = "any"

    @property
    def epsilon_unit(self) -> str:
        """What the site's ledger total protects: per patient only if the site requires it."""
        return "patient" if self.privacy_unit == "patient" else "image"

    @classmethod
    def read(cls, root: Path) -> "SiteKit":
        """Read and check ``root/site.toml`` and the key files beside it."""
        settings = root / "site.toml"
        try:
            raw = tomllib.loads(settings.read_text(encoding="utf-8"))
            limits = raw["limits"]
            kit = cls(
                root=root,
                name=str(raw["site"]["name"]),
                superlink=str(raw["site"]["superlink"]),
                max_epsilon=checked_epsilon(_number(limits, MAX_EPSILON), str(settings)),
                delta=checked_delta(_number(limits, DELTA, DEFAULT_DELTA), str(settings)),
                require_secure_aggregation=_flag(limits, REQUIRE_SECURE_AGGREGATION),
                require_dp=_flag(limits, REQUIRE_DP),
                privacy_unit=checked_unit(limits.get(PRIVACY_UNIT, "any"), str(settings)),
            )
        except FileNotFoundError:
            raise ConfigError(str(settings), "not found: is --kit a site's startup kit?") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(settings), f"not valid TOML: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                str(settings),
                f"needs [site] name, superlink and [limits] max-epsilon; bad or missing {exc}",
            ) from None
        for needed in ("ca.crt", "site.key"):
            if not (root / needed).is_file():
                raise ConfigError(str(root / needed), "missing from the startup kit")
        return kit


def _number(table: dict[str, object], key: str, default: float | None = None) -> float:
    value = table[key] if default is None else table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"[limits] {key} = {value!r} (a number)")
    return float(value)


def _flag(table: dict[str, object], key: str) -> bool:
    value = table.get(key, True)
    if not isinstance(value, bool):
        raise ValueError(f"[limits] {key} = {value!r} (true or false)")
    return value


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def supernode_command(
    kit: SiteKit,
    data: Path,
    port: int,
    insecure: bool = False,
    superlink: str | None = None,
    state: Path = Path("site-state"),
    integrity_key: Path | None = None,
) -> list[str]:
    """Flower's SuperNode for this site: TLS with the kit's CA and key unless ``insecure``.

    ``integrity_key`` (the file) authenticates the site's records in the ClientApp.
    """
    address = superlink or kit.superlink
    if insecure and not address.startswith(LOOPBACK_HOSTS):
        raise ConfigError(
            "--insecure", f"refused for {address}: only a coordinator on this machine (testing)"
        )
    node_config = " ".join(
        [
            f"{DATA_PATH}={_toml_string(str(data.resolve()))}",
            f"{SITE_NAME}={_toml_string(kit.name)}",
            f"{MAX_EPSILON}={kit.max_epsilon!r}",
            f"{DELTA}={kit.delta!r}",
            f"{REQUIRE_SECURE_AGGREGATION}={str(kit.require_secure_aggregation).lower()}",
            f"{REQUIRE_DP}={str(kit.require_dp).lower()}",
            f"{PRIVACY_UNIT}={_toml_string(kit.privacy_unit)}",
            f"{STATE_DIR}={_toml_string(str(state.resolve()))}",
        ]
    )
    if integrity_key is not None:
        node_config += f" {INTEGRITY_KEY}={_toml_string(str(integrity_key.resolve()))}"
    command = [
        *SUPERNODE_LAUNCH,
        "--superlink",
        address,
        "--port",
        str(port),
        "--node-config",
        node_config,
    ]
    if insecure:
        return [*command, "--insecure"]
    return [
        *command,
        "--root-certificates",
        str((kit.root / "ca.crt").resolve()),
        "--auth-supernode-private-key",
        str((kit.root / "site.key").resolve()),
    ]


#: The SuperNode's SuperExec (which starts a ClientApp process per message) checks for new
#: messages every 0.2 s instead of flwr 1.41's 1 s: a SecAgg+ round has four messages.
PROMPT_LAUNCH_ENV = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2"}
#: The variable `medfed-site start --threads` sets: torch's intra-op threads are OpenMP's.
TORCH_THREADS_ENV = "OMP_NUM_THREADS"


def start_site_node(
    kit: SiteKit,
    data: Path,
    port: int,
    log_file: Path,
    insecure: bool = False,
    superlink: str | None = None,
    state: Path = Path("site-state"),
    threads: int | None = None,
) -> subprocess.Popen[bytes]:
    """Check the cache reads and the site's records verify, then start the SuperNode.

    The records (privacy ledger, audit log) are verified under the kit's integrity key,
    created on the first start; the node runs in its own process group. ``threads`` caps the
    CPU threads of torch in every process the node starts (its OpenMP variable, which torch
    reads); None keeps torch's default, a thread per core.
    """
    load_dataset(data)  # fail here, with the path named, rather than in the first round
    state.mkdir(parents=True, exist_ok=True)
    key = ensure_integrity_key(kit.root)
    require_intact(state, kit.name, key)
    command = supernode_command(kit, data, port, insecure, superlink, state, key)
    env = {**flower_environment(log_file.parent / "flwr-home"), **PROMPT_LAUNCH_ENV}
    if threads is not None:
        env[TORCH_THREADS_ENV] = str(threads)
    return start_logged(command, log_file, env)
