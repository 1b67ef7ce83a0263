"""What a site allows, from its own node config: its data, its name, its privacy limits.

Light on purpose (no torch): the deployment ClientApp module imports it in every process.
The limits are the site's, read from its own site.toml by ``medfed-site start``; a job can
only be refused by them, never change them.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import BUDGET_REFUSAL, ConfigError
from common.federation_job import FederationJob

if TYPE_CHECKING:  # Flower's type only: reading limits imports no Flower
    from flwr.app import UserConfigValue

__all__ = [
    "DATA_PATH",
    "DEFAULT_DELTA",
    "DELTA",
    "INTEGRITY_KEY",
    "MAX_EPSILON",
    "PRIVACY_UNIT",
    "PRIVACY_UNITS",
    "REQUIRE_DP",
    "REQUIRE_SECURE_AGGREGATION",
    "SITE_NAME",
    "STATE_DIR",
    "SiteLimits",
    "checked_delta",
    "checked_epsilon",
    "checked_unit",
]

#: Node config keys set by ``medfed-site start`` (the same names as in site.toml's [limits]).
DATA_PATH = "data-path"
SITE_NAME = "site-name"
MAX_EPSILON = "max-epsilon"
DELTA = "delta"
REQUIRE_SECURE_AGGREGATION = "require-secure-aggregation"
REQUIRE_DP = "require-dp"
#: The unit every job's DP must protect at this site: "patient", or "any" (the default).
PRIVACY_UNIT = "privacy-unit"
PRIVACY_UNITS = ("patient", "any")
#: The site's state folder (privacy ledger, audit log).
STATE_DIR = "state-dir"
#: The file of the key that authenticates the records' chain heads (outside the state folder).
INTEGRITY_KEY = "integrity-key"

#: The delta a site composes its budget at unless its site.toml sets another.
DEFAULT_DELTA = 1e-5


def checked_epsilon(value: float, source: str) -> float:
    """``value`` if it is a finite number > 0; else a ConfigError naming ``source``."""
    if isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(source, f"{MAX_EPSILON} = {value}: must be a finite number > 0")
    return float(value)


def checked_delta(value: float, source: str) -> float:
    """``value`` if it is a finite number in (0, 1); else a ConfigError naming ``source``."""
    if isinstance(value, bool) or not math.isfinite(value) or not 0 < value < 1:
        raise ConfigError(source, f"{DELTA} = {value}: must be a number in (0, 1), e.g. 1e-5")
    return float(value)


def checked_unit(value: object, source: str) -> str:
    """``value`` if it is one of PRIVACY_UNITS; else a ConfigError naming ``source``."""
    if value not in PRIVACY_UNITS:
        raise ConfigError(
            source, f"{PRIVACY_UNIT} = {value!r}: must be one of {', '.join(PRIVACY_UNITS)}"
        )
    return str(value)


@dataclass(frozen=True)
class SiteLimits:
    """What this site allows: its data, its privacy budget and the protections it insists on."""

    data: Path
    name: str
    max_epsilon: float
    #: The site's own records (privacy ledger, audit trail); None keeps none.
    state_dir: Path | None = None
    #: Every job is composed and reported at this delta; a job asking a larger one is refused.
    delta: float = DEFAULT_DELTA
    require_secure_aggregation: bool = True
    require_dp: bool = True
    #: File of the HMAC key that authenticates the records' chain heads (outside state_dir).
    integrity_key: Path | None = None
    #: "patient": every job must protect whole patients (a job asking "image" is refused, and
    #: "auto" runs per patient or not at all); "any": the job's unit.
    privacy_unit: str = "any"

    def __post_init__(self) -> None:
        checked_epsilon(self.max_epsilon, f"site {self.name}'s limits")
        checked_delta(self.delta, f"site {self.name}'s limits")
        checked_unit(self.privacy_unit, f"site {self.name}'s limits")

    @property
    def epsilon_unit(self) -> str:
        """What this site's ledger total protects: per patient only if the site requires it."""
        return "patient" if self.privacy_unit == "patient" else "image"

    @classmethod
    def from_node_config(cls, node_config: "Mapping[str, UserConfigValue]") -> "SiteLimits":
        """Read the limits `medfed-site start` put into this node's config."""
        try:
            limits = cls(
                data=Path(str(node_config[DATA_PATH])),
                name=str(node_config[SITE_NAME]),
                max_epsilon=float(node_config[MAX_EPSILON]),
                state_dir=Path(str(node_config[STATE_DIR])) if STATE_DIR in node_config else None,
                delta=float(node_config.get(DELTA, DEFAULT_DELTA)),
                require_secure_aggregation=_flag(node_config, REQUIRE_SECURE_AGGREGATION),
                require_dp=_flag(node_config, REQUIRE_DP),
                integrity_key=(
                    Path(str(node_config[INTEGRITY_KEY])) if INTEGRITY_KEY in node_config else None
                ),
                privacy_unit=str(node_config.get(PRIVACY_UNIT, "any")),
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                "node config",
                f"needs '{DATA_PATH}', '{SITE_NAME}' and a number '{MAX_EPSILON}' "
                "(set by medfed-site start)",
            ) from None
        return limits

    def enforced(self, job: FederationJob) -> FederationJob:
        """The job as this site runs it: where the site requires patients, ``auto`` is patient.

        Data without patient keys is then refused at training, never run per image.
        """
        if self.privacy_unit != "patient" or job.privacy.unit != "auto":
            return job
        privacy = job.privacy.model_copy(update={"unit": "patient"})
        return job.model_copy(update={"privacy": privacy})

    def check(self, job: FederationJob) -> None:
        """Refuse a job that asks for less protection than this site insists on."""
        where = f"job {job.name}"
        if self.require_dp and not job.privacy.enabled:
            raise ConfigError(
                where, f"has privacy.enabled = false; site {self.name} requires DP; refused"
            )
        if self.require_secure_aggregation and not job.secure_aggregation.enabled:
            raise ConfigError(
                where,
                f"has secure_aggregation.enabled = false; site {self.name} requires "
                "secure aggregation; refused",
            )
        if not job.privacy.enabled:
            return
        if self.privacy_unit == "patient" and job.privacy.unit == "image":
            raise ConfigError(
                where,
                f'has privacy.unit = "image"; site {self.name} requires "patient"; refused',
            )
        if job.privacy.target_delta > self.delta:
            raise ConfigError(
                where,
                f"asks delta {job.privacy.target_delta:g}, above site {self.name}'s "
                f"delta {self.delta:g}; refused",
            )
        if job.privacy.target_epsilon > self.max_epsilon:
            raise ConfigError(
                where,
                f"asks epsilon {job.privacy.target_epsilon:g}, above site {self.name}'s "
                f"limit {self.max_epsilon:g}; {BUDGET_REFUSAL}",
            )


def _flag(node_config: "Mapping[str, UserConfigValue]", key: str) -> bool:
    """A boolean node config value, true when absent (the site's protection by default)."""
    value = node_config.get(key, True)
    if not isinstance(value, bool):
        raise ValueError(key)
    return value
