"""Keep a site's DP accountant state in Flower's context.state between rounds."""

from flwr.app import ConfigRecord, Context

from common.message_keys import PRIVACY_STATE
from common.privacy.accounting import PrivacyState

__all__ = ["restore_privacy_state", "store_privacy_state"]


def restore_privacy_state(context: Context) -> PrivacyState | None:
    """The state the previous round stored, None before the first round."""
    record = context.state.config_records.get(PRIVACY_STATE)
    return PrivacyState.from_json(str(record["json"])) if record is not None else None


def store_privacy_state(context: Context, state: PrivacyState) -> None:
    """Keep ``state`` for the next round of this site in this run."""
    context.state.config_records[PRIVACY_STATE] = ConfigRecord({"json": state.to_json()})
