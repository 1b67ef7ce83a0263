"""The site's ClientApp, the same on Flower's Simulation Engine and on a real federation.

A legacy-API app because flwr 1.41 runs SecAgg+ only on that path (NumPyClient + its mod).
Flower starts a fresh process for every message, and three of SecAgg+'s four messages per
round only exchange keys: this module stays light (no torch) and imports the training
client only when a message needs it, which saves each of those processes ~4 s of imports.
"""

from typing import cast

import numpy as np
from flwr.app import Context, Message
from flwr.client import Client
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from client.audit_mod import audit_mod
from client.flower_internals import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    bytes_to_ndarray,
    ndarray_to_bytes,
    secaggplus_mod,
)

__all__ = ["app", "secure_aggregation_mod"]


def _client_fn(context: Context) -> Client:
    from client.site_client import SiteClient  # noqa: PLC0415 (torch only where training runs)

    return SiteClient(context).to_client()


def _narrow_masked_vectors(reply: Message, context: Context) -> None:
    """Send masked vectors as uint32 instead of int64: half the upload, the same sum.

    Masked entries lie in [0, mod_range) with mod_range a power of two <= 2**32. The server
    adds them and reduces modulo mod_range; a uint32 sum wraps modulo 2**32, a multiple of
    mod_range, so every residue and therefore the unmasked aggregate is unchanged.
    """
    if reply.has_error():
        return
    configs = reply.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is None or Key.MASKED_PARAMETERS not in configs:
        return
    state = context.state.config_records[RECORD_KEY_STATE]
    mod_range = int(cast(int, state[Key.MOD_RANGE]))
    if mod_range > 2**32 or mod_range & (mod_range - 1):
        return
    masked = cast(list[bytes], configs[Key.MASKED_PARAMETERS])
    configs[Key.MASKED_PARAMETERS] = [
        ndarray_to_bytes(bytes_to_ndarray(vector).astype(np.uint32)) for vector in masked
    ]


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Apply SecAgg+ to the rounds the coordinator runs with it; plain rounds pass through."""
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    reply = secaggplus_mod(msg, context, call_next)
    _narrow_masked_vectors(reply, context)
    return reply


#: The ClientApp named in pyproject.toml and in every job's app folder.
app = ClientApp(client_fn=_client_fn, mods=[audit_mod, secure_aggregation_mod])
