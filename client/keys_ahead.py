"""A site's SecAgg+ keys for the next round, announced with this round's key shares.

Flower's SecAgg+ round opens with a setup exchange whose only answer is each site's two fresh
public keys. When the coordinator's unmask message asks for them (server/secagg_messages.py),
the site makes the next round's key pairs at once, keeps them in its context (as Flower keeps
the round's own) and sends the public halves with its key shares. If every site of the next
round did so, that round has no setup exchange: its share-keys message carries the setup
config, and the site runs Flower's own setup stage on it with the keys it announced.
"""

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable

from client.flower_internals import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    SECAGG_KEY_FIELDS,
    Key,
    Stage,
    new_secagg_key_pairs,
    secaggplus_mod,
)
from common.errors import MedfedError
from common.message_keys import KEYS_FOR_ROUND, NEXT_ROUND_KEYS, SECAGG_SETUP

__all__ = [
    "ANNOUNCED_KEYS",
    "AnnouncedKeysError",
    "announce_next_round_keys",
    "forget_announced_keys",
    "set_up_with_announced_keys",
]

#: The context record that keeps the announced key pairs (secret halves too) until their round.
ANNOUNCED_KEYS = "medfed-secagg-announced-keys"


class AnnouncedKeysError(MedfedError):
    """A round's setup came without its exchange, but this site announced no keys for it."""


def _round(msg: Message) -> int | None:
    group = msg.metadata.group_id
    return int(group) if group.isdigit() else None


def announce_next_round_keys(msg: Message, reply: Message, context: Context) -> None:
    """Add the next round's public keys to an unmask ``reply`` if ``msg`` asks for them."""
    asked = msg.content.config_records.get(NEXT_ROUND_KEYS)
    this_round = _round(msg)
    if asked is None or reply.has_error() or this_round is None:
        return
    if asked.get(KEYS_FOR_ROUND) != this_round + 1:  # only ever the very next round's
        return
    pairs = new_secagg_key_pairs()
    kept = ConfigRecord({KEYS_FOR_ROUND: this_round + 1, **pairs})
    context.state.config_records[ANNOUNCED_KEYS] = kept
    reply.content.config_records[NEXT_ROUND_KEYS] = ConfigRecord({
        KEYS_FOR_ROUND: this_round + 1,
        Key.PUBLIC_KEY_1: pairs["pk1"],
        Key.PUBLIC_KEY_2: pairs["pk2"],
    })  # fmt: skip


def forget_announced_keys(context: Context) -> None:
    """Drop announced keys a round with its own setup exchange will not use."""
    context.state.config_records.pop(ANNOUNCED_KEYS, None)


def set_up_with_announced_keys(
    msg: Message, context: Context, call_next: ClientAppCallable
) -> bool:
    """Run Flower's setup stage from a share-keys message's setup config; True if it had one.

    The setup takes the keys announced for this round (and forgets them). Raises
    :class:`AnnouncedKeysError` if there are none for it: the site then drops out of the round.
    """
    setup = msg.content.config_records.pop(SECAGG_SETUP, None)
    if setup is None:
        return False
    announced = context.state.config_records.pop(ANNOUNCED_KEYS, None)
    this_round = _round(msg)
    if announced is None or announced.get(KEYS_FOR_ROUND) != this_round:
        kept = "none" if announced is None else f"round {announced.get(KEYS_FOR_ROUND)!r}'s"
        raise AnnouncedKeysError(
            f"round {msg.metadata.group_id} comes without a setup exchange, but this site "
            f"keeps no keys announced for it ({kept})"
        )
    configs = ConfigRecord(dict(setup))
    configs[Key.STAGE] = Stage.SETUP  # Flower's own checks of the stage order and config
    records = msg.content.config_records
    share_keys, records[RECORD_KEY_CONFIGS] = records[RECORD_KEY_CONFIGS], configs
    try:  # Flower's setup stage on this very message, its config swapped for the setup's
        secaggplus_mod(msg, context, call_next)
    finally:
        records[RECORD_KEY_CONFIGS] = share_keys
    state = context.state.config_records[RECORD_KEY_STATE]
    for name in SECAGG_KEY_FIELDS:  # the keys the other sites already hold
        state[name] = announced[name]
    return True
