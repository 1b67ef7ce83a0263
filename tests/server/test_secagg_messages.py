"""The coordinator's SecAgg+ messages: the model goes with setup, once per site; keys a round ahead.

The grid below only records what the workflow sends and answers as the sites would; the
round itself, with real sites, runs in tests/simulations/test_simulation_e2e.py,
tests/simulations/test_update_paths_e2e.py (a round without setup exchange sums as plain FedAvg)
and tests/deployment/test_secure_federation.py (which checks each site trained after its first
reply of the round had left).
"""

import logging
from collections.abc import Callable, Iterable

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server import Grid
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.supercore.task_identity import TaskIdentity

from client.flower_internals import new_secagg_key_pairs
from common.message_keys import (
    FIT_INS_MODEL,
    KEYS_FOR_ROUND,
    NEXT_ROUND_KEYS,
    SECAGG_SETUP,
    TRAINED_AT_SETUP,
)
from server.secagg_messages import (
    AnnouncedKeys,
    AnnouncedKeysGrid,
    KeysAheadGrid,
    ModelEarlyGrid,
    ModelOnceGrid,
)


class _RecordingGrid(Grid):
    """Keeps what is sent; each site answers with ``answers[node]`` in its config record, plus
    the records ``extra(message)`` returns."""

    def __init__(
        self,
        answers: dict[int, dict[str, bool]],
        extra: Callable[[Message], dict[str, ConfigRecord]] = lambda _: {},
    ) -> None:
        self.sent: list[Message] = []
        self._answers, self._extra = answers, extra

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        self.sent = list(messages)
        return [
            Message(
                content=RecordDict({
                    RECORD_KEY_CONFIGS: ConfigRecord(self._answers[m.metadata.dst_node_id]),
                    **self._extra(m),
                }),
                reply_to=m,
            )
            for m in self.sent
        ]  # fmt: skip

    # the rest of Grid's interface is not used by these two wrappers
    def set_run(self, run_id):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201, D102
        raise NotImplementedError

    @property
    def run(self):  # type: ignore[no-untyped-def]  # noqa: ANN201, D102
        raise NotImplementedError

    def create_message(self, *args, **kwargs):  # type: ignore[no-untyped-def]  # noqa: ANN002, ANN003, ANN201, D102
        raise NotImplementedError

    def get_node_ids(self):  # type: ignore[no-untyped-def]  # noqa: ANN201, D102
        raise NotImplementedError

    def push_messages(self, messages):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201, D102
        raise NotImplementedError

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201, D102
        raise NotImplementedError


def _fitins() -> RecordDict:
    return RecordDict({
        FIT_INS_MODEL: ArrayRecord([np.arange(6, dtype=np.float32)]),
        "fitins.config": ConfigRecord({"server-round": 1}),
    })  # fmt: skip


def _stage_message(node: int, content: RecordDict, server_round: int = 1) -> Message:
    return Message(
        content=content,
        dst_node_id=node,
        message_type=MessageType.TRAIN,
        group_id=str(server_round),
    )


@pytest.fixture(autouse=True)
def _coordinator_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("_task_id", 1), ("_run_id", 3), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)


def test_setup_carries_the_model_and_the_masked_vector_stage_leaves_it_out_where_trained() -> None:
    state = WorkflowState(nid_to_fitins={11: _fitins(), 12: _fitins()})
    trained: set[int] = set()
    setup_config = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({"stage": "setup"})})
    # site 11 trains at setup; site 12 (an older medfed) does not say so
    network = _RecordingGrid({11: {TRAINED_AT_SETUP: True}, 12: {}})
    ModelEarlyGrid(network, state, trained).send_and_receive(
        [_stage_message(11, setup_config), _stage_message(12, setup_config)]
    )
    assert all(FIT_INS_MODEL in m.content.array_records for m in network.sent)
    assert all(m.content.config_records[RECORD_KEY_CONFIGS]["stage"] == "setup"
               for m in network.sent)  # fmt: skip
    assert trained == {11}

    network = _RecordingGrid({11: {}, 12: {}})
    collect = [_stage_message(node, _fitins()) for node in (11, 12)]
    ModelOnceGrid(network, trained).send_and_receive(collect)
    sent = {m.metadata.dst_node_id: m.content for m in network.sent}
    assert FIT_INS_MODEL not in sent[11].array_records  # it has the model already
    assert "fitins.config" in sent[11].config_records
    assert FIT_INS_MODEL in sent[12].array_records  # trains now, as in Flower's protocol


def _public_keys() -> tuple[bytes, bytes]:
    pairs = new_secagg_key_pairs()  # as a site makes them (Flower's own key generation)
    return pairs["pk1"], pairs["pk2"]


def _unmask_messages(nodes: Iterable[int], server_round: int) -> list[Message]:
    content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({"stage": "unmask"})})
    return [_stage_message(node, content, server_round) for node in nodes]


def _announcing(keys_of: dict[int, ConfigRecord | None]) -> Callable[[Message], dict]:
    def extra(msg: Message) -> dict[str, ConfigRecord]:
        announced = keys_of[msg.metadata.dst_node_id]
        return {} if announced is None else {NEXT_ROUND_KEYS: announced}

    return extra


def _keys_record(server_round: int, pk1: object, pk2: object) -> ConfigRecord:
    return ConfigRecord({KEYS_FOR_ROUND: server_round, Key.PUBLIC_KEY_1: pk1,
                         Key.PUBLIC_KEY_2: pk2})  # type: ignore[dict-item]  # fmt: skip


def test_unmask_messages_ask_for_next_round_keys_and_keep_only_well_formed_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = _public_keys()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_pem = rsa_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    replies = {
        1: _keys_record(3, *good),
        2: _keys_record(3, b"-----BEGIN PUBLIC KEY-----\nnot a key", _public_keys()[1]),
        3: _keys_record(3, rsa_pem, _public_keys()[1]),  # no secret agreed with it: refused
        4: _keys_record(4, *_public_keys()),  # keys for another round than asked
        5: _keys_record(3, good[0], _public_keys()[1]),  # repeats site 1's key
        6: None,  # an older site: announces nothing, so round 3 will run its setup
    }
    network = _RecordingGrid({n: {} for n in replies}, _announcing(replies))
    announced = AnnouncedKeys()
    with caplog.at_level(logging.WARNING):
        AnnouncedKeysGrid(network, 3, announced).send_and_receive(_unmask_messages(replies, 2))
    assert all(m.content.config_records[NEXT_ROUND_KEYS][KEYS_FOR_ROUND] == 3
               for m in network.sent)  # fmt: skip
    assert announced.server_round == 3 and announced.by_node == {1: good}
    for node, why in ((2, "not a PEM public key"), (3, "not an elliptic-curve key on secp384r1"),
                      (4, "for round 4"), (5, "repeat a key")):  # fmt: skip
        assert f"node {node}'s keys for round 3 are not used: " in caplog.text
        assert why in caplog.text

    # the last round asks for nothing (no round follows it) and keeps what it had
    network = _RecordingGrid({1: {}})
    AnnouncedKeysGrid(network, 3, announced).send_and_receive(_unmask_messages([1], 3))
    assert NEXT_ROUND_KEYS not in network.sent[0].content.config_records
    assert announced.by_node == {1: good}


def _setup_messages(nodes: Iterable[int], server_round: int) -> list[Message]:
    setup = ConfigRecord({"stage": "setup", "sample_num": 2, "share_num": 2, "threshold": 2})
    return [_stage_message(n, RecordDict({RECORD_KEY_CONFIGS: setup}), server_round) for n in nodes]


def test_a_round_whose_sites_all_announced_keys_sends_no_setup_and_the_model_goes_with_shares() -> (
    None
):
    keys_of = {11: _public_keys(), 12: _public_keys()}
    announced = AnnouncedKeys(server_round=2, by_node=dict(keys_of))
    setups: dict[int, ConfigRecord] = {}
    network = _RecordingGrid({11: {}, 12: {}})
    replies = list(
        KeysAheadGrid(network, announced, setups).send_and_receive(_setup_messages(keys_of, 2))
    )
    assert network.sent == []  # no setup exchange
    assert {r.metadata.src_node_id: (r.content.config_records[RECORD_KEY_CONFIGS][Key.PUBLIC_KEY_1],
                                     r.content.config_records[RECORD_KEY_CONFIGS][Key.PUBLIC_KEY_2])
            for r in replies} == keys_of  # fmt: skip
    assert announced.by_node == {}  # used once
    assert set(setups) == {11, 12} and setups[11]["sample_num"] == 2

    # the share-keys stage then carries each site's setup and the model
    state = WorkflowState(nid_to_fitins={11: _fitins(), 12: _fitins()})
    trained: set[int] = set()
    network = _RecordingGrid({11: {TRAINED_AT_SETUP: True}, 12: {TRAINED_AT_SETUP: True}})
    shares = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({"stage": "share_keys"})})
    ModelEarlyGrid(network, state, trained, setups).send_and_receive(
        [_stage_message(n, shares, 2) for n in (11, 12)]
    )
    for msg in network.sent:
        assert FIT_INS_MODEL in msg.content.array_records
        assert msg.content.config_records[SECAGG_SETUP]["stage"] == "setup"
        assert msg.content.config_records[RECORD_KEY_CONFIGS]["stage"] == "share_keys"
    assert trained == {11, 12}


def test_a_round_with_a_site_that_announced_no_keys_runs_its_setup_exchange() -> None:
    announced = AnnouncedKeys(server_round=2, by_node={11: _public_keys()})
    setups: dict[int, ConfigRecord] = {}
    network = _RecordingGrid({11: {}, 12: {}})
    KeysAheadGrid(network, announced, setups).send_and_receive(_setup_messages([11, 12], 2))
    assert [m.metadata.dst_node_id for m in network.sent] == [11, 12]
    assert setups == {} and announced.by_node == {}  # site 11's keys are spent all the same

    # keys announced for another round are not used either
    announced = AnnouncedKeys(server_round=2, by_node={11: _public_keys(), 12: _public_keys()})
    network = _RecordingGrid({11: {}, 12: {}})
    KeysAheadGrid(network, announced, setups).send_and_receive(_setup_messages([11, 12], 3))
    assert len(network.sent) == 2 and setups == {}
