"""What a site allows, from its own node config: its data, its name, its privacy budget.

Light on purpose (no torch): the deployment ClientApp module imports it in every process.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError
from common.federation_job import FederationJob

__all__ = ["DATA_PATH", "MAX_EPSILON", "SITE_NAME", "STATE_DIR", "SiteLimits"]

#: Node config keys set by ``medfed-site start``.
DATA_PATH = "data-path"
SITE_NAME = "site-name"
MAX_EPSILON = "max-epsilon"
#: The site's state folder (privacy ledger, audit log).
STATE_DIR = "state-dir"


@dataclass(frozen=True)
class SiteLimits:
    """What this site allows: its data and its privacy budget."""

    data: Path
    name: str
    max_epsilon: float
    #: The site's own records (privacy ledger, audit trail); None keeps none.
    state_dir: Path | None = None
    #: Refuse jobs without DP (every hospital; a simulated site may study training without).
    require_dp: bool = True

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> "SiteLimits":
        """Read the limits `medfed-site start` put into this node's config."""
        try:
            return cls(
                data=Path(str(node_config[DATA_PATH])),
                name=str(node_config[SITE_NAME]),
                max_epsilon=float(node_config[MAX_EPSILON]),  # type: ignore[arg-type]
                state_dir=Path(str(node_config[STATE_DIR])) if STATE_DIR in node_config else None,
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                "node config",
                f"needs '{DATA_PATH}', '{SITE_NAME}' and a number '{MAX_EPSILON}' "
                "(set by medfed-site start)",
            ) from None

    def check(self, job: FederationJob) -> None:
        """Refuse a job that would train without DP or spend more than this site's budget."""
        if self.require_dp and not job.privacy.enabled:
            raise ConfigError(
                f"job {job.name}", f"site {self.name} trains only with differential privacy"
            )
        if job.privacy.target_epsilon > self.max_epsilon:
            raise ConfigError(
                f"job {job.name}",
                f"asks epsilon {job.privacy.target_epsilon:g}, above site {self.name}'s "
                f"limit {self.max_epsilon:g}; refused",
            )
