"""The coordinator's SecAgg+ messages: the model goes with setup, once per site.

The grid below only records what the workflow sends and answers as the sites would; the
round itself, with real sites, runs in tests/simulations/test_simulation_e2e.py and
tests/deployment/test_secure_federation.py (which checks each site trained after its setup
reply had left).
"""

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.server import Grid
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.supercore.task_identity import TaskIdentity

from common.message_keys import FIT_INS_MODEL, TRAINED_AT_SETUP
from server.secure_rounds import _ModelAtSetupGrid, _ModelOnceGrid


class _RecordingGrid(Grid):
    """Keeps what is sent; each site answers with ``answers[node]`` in its config record."""

    def __init__(self, answers: dict[int, dict[str, bool]]) -> None:
        self.sent: list[Message] = []
        self._answers = answers

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        self.sent = list(messages)
        return [
            Message(
                content=RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(
                    self._answers[m.metadata.dst_node_id]
                )}),
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


def _stage_message(node: int, content: RecordDict) -> Message:
    return Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN, group_id="1")


def test_setup_carries_the_model_and_the_masked_vector_stage_leaves_it_out_where_trained(
    monkeypatch,  # noqa: ANN001
) -> None:
    for name, value in (("_task_id", 1), ("_run_id", 3), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)
    state = WorkflowState(nid_to_fitins={11: _fitins(), 12: _fitins()})
    trained: set[int] = set()
    setup_config = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({"stage": "setup"})})
    # site 11 trains at setup; site 12 (an older medfed) does not say so
    network = _RecordingGrid({11: {TRAINED_AT_SETUP: True}, 12: {}})
    _ModelAtSetupGrid(network, state, trained).send_and_receive(
        [_stage_message(11, setup_config), _stage_message(12, setup_config)]
    )
    assert all(FIT_INS_MODEL in m.content.array_records for m in network.sent)
    assert all(m.content.config_records[RECORD_KEY_CONFIGS]["stage"] == "setup"
               for m in network.sent)  # fmt: skip
    assert trained == {11}

    network = _RecordingGrid({11: {}, 12: {}})
    collect = [_stage_message(node, _fitins()) for node in (11, 12)]
    _ModelOnceGrid(network, trained).send_and_receive(collect)
    sent = {m.metadata.dst_node_id: m.content for m in network.sent}
    assert FIT_INS_MODEL not in sent[11].array_records  # it has the model already
    assert "fitins.config" in sent[11].config_records
    assert FIT_INS_MODEL in sent[12].array_records  # trains now, as in Flower's protocol
