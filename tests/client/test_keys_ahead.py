"""A site announces its next round's SecAgg+ keys with its key shares, and sets up from them.

Real Flower messages, contexts and SecAgg+ mod: the share-keys stage that follows a setup made
from announced keys runs Flower's own check that the coordinator listed this site's keys.
The whole round, with the coordinator, runs in tests/simulations/test_update_paths_e2e.py.
"""

from collections.abc import Iterator

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, public_key_to_bytes
from flwr.supercore.task_identity import TaskIdentity

from client.client_app import secure_aggregation_mod
from client.flower_internals import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key, Stage
from client.keys_ahead import (
    ANNOUNCED_KEYS,
    AnnouncedKeysError,
    announce_next_round_keys,
    set_up_with_announced_keys,
)
from common.message_keys import KEYS_FOR_ROUND, NEXT_ROUND_KEYS, SECAGG_SETUP

RUN_ID = 7
SITES = (5, 6, 8)


@pytest.fixture(autouse=True)
def _task_identity() -> Iterator[None]:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, RUN_ID, 0
    yield
    TaskIdentity._task_id = TaskIdentity._run_id = TaskIdentity._node_id = None  # noqa: SLF001


def _context(node: int) -> Context:
    return Context(run_id=RUN_ID, node_id=node, node_config={}, state=RecordDict(), run_config={})


def _message(node: int, server_round: int, **records: ConfigRecord) -> Message:
    return Message(content=RecordDict(records), dst_node_id=node,
                   message_type=MessageType.TRAIN, group_id=str(server_round))  # fmt: skip


def _announce(
    node: int, context: Context, server_round: int, asked_for: int
) -> ConfigRecord | None:
    unmask = _message(
        node, server_round, **{NEXT_ROUND_KEYS: ConfigRecord({KEYS_FOR_ROUND: asked_for})}
    )
    reply = Message(content=RecordDict(), reply_to=unmask)
    announce_next_round_keys(unmask, reply, context)
    return reply.content.config_records.get(NEXT_ROUND_KEYS)


def _setup_config() -> ConfigRecord:
    return ConfigRecord({
        Key.STAGE: Stage.SETUP, Key.SAMPLE_NUMBER: 3, Key.SHARE_NUMBER: 3, Key.THRESHOLD: 2,
        Key.CLIPPING_RANGE: 8.0, Key.TARGET_RANGE: 2**22, Key.MOD_RANGE: 2**24,
        Key.MAX_WEIGHT: 1000.0,
    })  # fmt: skip


def _never(_msg: Message, _context: Context) -> Message:
    raise AssertionError("no training without a state folder")


def test_announced_keys_set_up_a_round_whose_share_keys_stage_flower_accepts() -> None:
    contexts = {node: _context(node) for node in SITES}
    announced = {node: _announce(node, contexts[node], 1, 2) for node in SITES}
    for node, record in announced.items():
        assert record is not None and record[KEYS_FOR_ROUND] == 2
        kept = contexts[node].state.config_records[ANNOUNCED_KEYS]
        for secret, public in (("sk1", Key.PUBLIC_KEY_1), ("sk2", Key.PUBLIC_KEY_2)):
            derived = public_key_to_bytes(bytes_to_private_key(kept[secret]).public_key())
            assert derived == record[public]  # the site keeps the secret half of what it sent
    # round 2 starts at its share keys; each message lists every site's announced keys
    neighbours = {str(n): [r[Key.PUBLIC_KEY_1], r[Key.PUBLIC_KEY_2]]
                  for n, r in announced.items() if r is not None}  # fmt: skip
    for node in SITES:
        shares = ConfigRecord({Key.STAGE: Stage.SHARE_KEYS, **neighbours})
        msg = _message(node, 2, **{RECORD_KEY_CONFIGS: shares, SECAGG_SETUP: _setup_config()})
        reply = secure_aggregation_mod(msg, contexts[node], _never)
        assert not reply.has_error()
        sent = reply.content.config_records[RECORD_KEY_CONFIGS]
        assert sorted(sent[Key.DESTINATION_LIST]) == sorted(n for n in SITES if n != node)
        state = contexts[node].state.config_records[RECORD_KEY_STATE]
        assert state["current_stage"] == Stage.SHARE_KEYS and state["threshold"] == 2
        assert ANNOUNCED_KEYS not in contexts[node].state.config_records  # used once


def test_a_setup_without_exchange_but_without_announced_keys_is_refused_by_name() -> None:
    context = _context(5)
    shares = ConfigRecord({Key.STAGE: Stage.SHARE_KEYS})
    msg = _message(5, 3, **{RECORD_KEY_CONFIGS: shares, SECAGG_SETUP: _setup_config()})
    with pytest.raises(
        AnnouncedKeysError, match=r"round 3 comes without a setup exchange.*\(none\)"
    ):
        set_up_with_announced_keys(msg, context, _never)

    _announce(5, context, 1, 2)  # keys for round 2, asked again in round 3
    msg = _message(5, 3, **{RECORD_KEY_CONFIGS: shares, SECAGG_SETUP: _setup_config()})
    with pytest.raises(AnnouncedKeysError, match=r"\(round 2's\)"):
        set_up_with_announced_keys(msg, context, _never)


def test_a_site_announces_keys_only_for_the_very_next_round_and_a_full_setup_forgets_them() -> None:
    context = _context(5)
    assert _announce(5, context, 1, 5) is None  # a coordinator asking for a later round
    assert ANNOUNCED_KEYS not in context.state.config_records
    assert _announce(5, context, 1, 2) is not None
    setup = _message(5, 2, **{RECORD_KEY_CONFIGS: _setup_config()})
    reply = secure_aggregation_mod(setup, context, _never)  # the round ran its setup exchange
    assert Key.PUBLIC_KEY_1 in reply.content.config_records[RECORD_KEY_CONFIGS]
    assert ANNOUNCED_KEYS not in context.state.config_records


def test_a_setup_config_flower_refuses_stops_the_site_before_its_key_shares() -> None:
    context = _context(5)
    _announce(5, context, 1, 2)
    bad = _setup_config()
    bad[Key.THRESHOLD] = "2"  # a string where Flower's setup needs an int
    shares = ConfigRecord({Key.STAGE: Stage.SHARE_KEYS})
    msg = _message(5, 2, **{RECORD_KEY_CONFIGS: shares, SECAGG_SETUP: bad})
    with pytest.raises(TypeError, match="threshold"):
        secure_aggregation_mod(msg, context, _never)
    assert msg.content.config_records[RECORD_KEY_CONFIGS] is shares  # its own config restored
