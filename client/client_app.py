"""The site's ClientApp, the same on Flower's Simulation Engine and on a real federation.

A legacy-API app because flwr 1.41 runs SecAgg+ only on that path (NumPyClient + its mod).
Flower starts a fresh process for every message, and three of SecAgg+'s four messages per
round only exchange keys: this module stays light (no torch) and imports the training
client only when a message needs it, which saves each of those processes ~4 s of imports.
"""

from typing import cast

from flwr.app import Context, Message, MessageType
from flwr.client import Client
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from client.audit_mod import audit_mod
from client.early_training import (
    EarlyTrainingError,
    carries_model,
    reply_trained_at_setup,
    train_at_setup,
)
from client.flower_internals import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
    bytes_to_ndarray,
    fit_arrays,
    replace_fit_arrays,
    secaggplus_mod,
)
from common import message_keys as keys
from common.masked_packing import pack_masked
from common.update_encoding import encode_update

__all__ = ["app", "plain_update_mod", "secure_aggregation_mod"]


def _client_fn(context: Context) -> Client:
    from client.site_client import SiteClient  # noqa: PLC0415 (torch only where training runs)

    return SiteClient(context).to_client()


def _narrow_masked_vectors(reply: Message, context: Context) -> None:
    """Send masked vectors in the modulus' bytes (3 at 2**24) instead of int64: the same sum.

    Masked entries lie in [0, mod_range) with mod_range a power of two; packed into
    :func:`~common.masked_packing.packed_width` little-endian bytes each, they unpack to the
    very same integers at the coordinator (``server.secure_rounds``), before Flower adds them.
    """
    if reply.has_error():
        return
    configs = reply.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is None or Key.MASKED_PARAMETERS not in configs:
        return
    state = context.state.config_records[RECORD_KEY_STATE]
    mod_range = int(cast(int, state[Key.MOD_RANGE]))
    masked = cast(list[bytes], configs[Key.MASKED_PARAMETERS])
    configs[Key.MASKED_PARAMETERS] = [
        pack_masked(bytes_to_ndarray(vector), mod_range) for vector in masked
    ]


def _setup_and_train(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """SecAgg+'s setup reply; the round's training starts too if the message carries the model.

    The reply then tells the coordinator so (client/early_training.py says when it trains).
    """
    reply = secaggplus_mod(msg, context, call_next)
    if not reply.has_error() and train_at_setup(msg, context, call_next):
        reply.content.config_records[RECORD_KEY_CONFIGS][keys.TRAINED_AT_SETUP] = True
    return reply


def _masked_vector_training(call_next: ClientAppCallable) -> ClientAppCallable:
    """The masked-vector stage's training: the one started at setup, else ``call_next``'s."""

    def train(msg: Message, context: Context) -> Message:
        trained = reply_trained_at_setup(msg, context)
        if trained is not None:
            return trained
        if not carries_model(msg):
            raise EarlyTrainingError(
                f"round {msg.metadata.group_id}'s masked-vector message carries no model and "
                "this site trained none at its setup stage"
            )
        return call_next(msg, context)

    return train


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Apply SecAgg+ to the rounds the coordinator runs with it; plain rounds pass through."""
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is None:
        return call_next(msg, context)
    stage = configs.get(Key.STAGE)
    if stage == Stage.SETUP:
        return _setup_and_train(msg, context, call_next)
    if stage == Stage.COLLECT_MASKED_VECTORS:
        call_next = _masked_vector_training(call_next)
    reply = secaggplus_mod(msg, context, call_next)
    _narrow_masked_vectors(reply, context)
    return reply


def plain_update_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Send a plain round's delta as one byte-shuffled, deflated array (lossless, ~0.85x).

    Outside :func:`secure_aggregation_mod`: SecAgg+ rounds (their messages carry its config
    record) pass through untouched, since their masked integers neither compress nor may be
    altered. The coordinator decodes with :func:`common.update_encoding.decode_update`.
    """
    reply = call_next(msg, context)
    plain = RECORD_KEY_CONFIGS not in msg.content.config_records
    if reply.has_error() or msg.metadata.message_type != MessageType.TRAIN or not plain:
        return reply
    delta = fit_arrays(reply.content)
    if delta:
        replace_fit_arrays(reply.content, [encode_update(delta)])
    return reply


#: The ClientApp named in pyproject.toml and in every job's app folder.
app = ClientApp(client_fn=_client_fn, mods=[audit_mod, plain_update_mod, secure_aggregation_mod])
