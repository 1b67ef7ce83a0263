"""A SecAgg+ round trained at its setup stage, taken by its masked-vector stage.

Real Flower messages and contexts, real files in a site's state folder, and a real second
process for the hospital's case (the setup message's process trains after its reply has
left while the masked-vector message's process waits). The whole round, on Flower's
Simulation Engine and on real SuperNodes, runs in tests/simulations/test_simulation_e2e.py
and tests/deployment/test_secure_federation.py.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.early_training import (
    STASH_FOLDER,
    EarlyTrainingError,
    reply_trained_at_setup,
    train_at_setup,
)
from client.flower_internals import RECORD_KEY_STATE
from client.site_limits import STATE_DIR
from common.message_keys import FIT_INS_MODEL

RUN_ID, NODE_ID = 7, 5


@pytest.fixture(autouse=True)
def _task_identity() -> Iterator[None]:
    """Flower stamps each message with the run of the process that makes it."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, RUN_ID, NODE_ID
    yield
    TaskIdentity._task_id = TaskIdentity._run_id = TaskIdentity._node_id = None  # noqa: SLF001


def _context(state_dir: Path) -> Context:
    return Context(
        run_id=RUN_ID, node_id=5, node_config={STATE_DIR: str(state_dir)},
        state=RecordDict(), run_config={},
    )  # fmt: skip


def _message(server_round: int, with_model: bool = True) -> Message:
    content = RecordDict({"fitins.config": ConfigRecord({"server-round": server_round})})
    if with_model:
        content[FIT_INS_MODEL] = ArrayRecord([np.arange(4, dtype=np.float32)])
    return Message(
        content=content, dst_node_id=5, message_type=MessageType.TRAIN, group_id=str(server_round)
    )


def _train(msg: Message, context: Context) -> Message:
    """A training step's visible effects: a reply from the model, and its accountant's state."""
    model = msg.content.array_records[FIT_INS_MODEL].to_numpy_ndarrays()[0]
    server_round = msg.content.config_records["fitins.config"]["server-round"]
    context.state["privacy-state"] = ConfigRecord({"rounds": server_round})
    context.state[RECORD_KEY_STATE] = ConfigRecord({"stage": "written by the training"})
    return Message(
        content=RecordDict({"fitres.parameters": ArrayRecord([model + 1])}), reply_to=msg
    )


def test_the_masked_vector_stage_takes_the_setup_stages_training_and_its_context(
    tmp_path: Path,
) -> None:
    setup_context = _context(tmp_path)
    assert train_at_setup(_message(3), setup_context, _train)  # no deferral here: trains now
    stash = tmp_path / STASH_FOLDER
    assert [p.name for p in stash.iterdir()] == [f"run-{RUN_ID}-round-3.reply"]
    assert stash.stat().st_mode & 0o777 == 0o700  # the site's unmasked update, kept to itself
    assert (stash / f"run-{RUN_ID}-round-3.reply").stat().st_mode & 0o777 == 0o600

    # The masked-vector stage runs in another process, on the context SecAgg+ moved on.
    collect_context = _context(tmp_path)
    collect_context.state[RECORD_KEY_STATE] = ConfigRecord({"stage": "share_keys"})
    collect = _message(3, with_model=False)
    reply = reply_trained_at_setup(collect, collect_context)

    assert reply is not None and reply.metadata.reply_to_message_id == collect.metadata.message_id
    arrays = reply.content.array_records["fitres.parameters"].to_numpy_ndarrays()
    np.testing.assert_array_equal(arrays[0], np.arange(4) + 1)
    assert collect_context.state.config_records["privacy-state"]["rounds"] == 3
    # SecAgg+'s own state is the one its key-share stage left, not the training's copy
    assert collect_context.state.config_records[RECORD_KEY_STATE]["stage"] == "share_keys"
    assert list(stash.iterdir()) == []
    assert reply_trained_at_setup(collect, collect_context) is None  # taken once


def test_a_message_without_the_model_or_a_site_without_a_state_folder_trains_at_its_stage(
    tmp_path: Path,
) -> None:
    assert not train_at_setup(_message(1, with_model=False), _context(tmp_path), _train)
    no_folder = Context(run_id=RUN_ID, node_id=5, node_config={}, state=RecordDict(), run_config={})
    assert not train_at_setup(_message(1), no_folder, _train)
    assert reply_trained_at_setup(_message(1), _context(tmp_path)) is None


def test_a_state_folder_that_cannot_keep_the_result_leaves_training_to_its_stage(
    tmp_path: Path,
) -> None:
    not_a_folder = tmp_path / "state"
    not_a_folder.write_text("a file where the state folder should be")
    assert not train_at_setup(_message(1), _context(not_a_folder), _train)


def test_a_damaged_result_is_named_and_set_aside_and_the_next_round_still_trains(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stash = tmp_path / STASH_FOLDER
    train_at_setup(_message(1), _context(tmp_path), _train)
    kept = stash / f"run-{RUN_ID}-round-1.reply"
    kept.write_bytes(b"\xff not a record dict")  # e.g. a disk error
    with pytest.raises(EarlyTrainingError, match=rf"{kept}: not a training result this site kept"):
        reply_trained_at_setup(_message(1, with_model=False), _context(tmp_path))
    assert not kept.exists() and (stash / f"{kept.name}.damaged").read_bytes().startswith(b"\xff")

    train_at_setup(_message(2), _context(tmp_path), _train)  # round 1 never sent: left over
    leftover = stash / f"run-{RUN_ID}-round-2.reply"
    leftover.write_bytes(b"\xff")
    assert train_at_setup(_message(3), _context(tmp_path), _train)  # trains all the same
    assert f"{leftover}: not a training result" in caplog.text
    assert (stash / f"{leftover.name}.damaged").exists()
    assert reply_trained_at_setup(_message(3, with_model=False), _context(tmp_path)) is not None


def test_a_failed_training_is_raised_with_its_reason_at_the_masked_vector_stage(
    tmp_path: Path,
) -> None:
    def refuse(_msg: Message, _context: Context) -> Message:
        raise RuntimeError("site-x refuses this round: epsilon 9.47 above its limit 9")

    assert train_at_setup(_message(2), _context(tmp_path), refuse)  # the setup reply still goes
    with pytest.raises(EarlyTrainingError, match=r"^RuntimeError: site-x refuses this round"):
        reply_trained_at_setup(_message(2, with_model=False), _context(tmp_path))
    assert list((tmp_path / STASH_FOLDER).iterdir()) == []


def test_a_round_never_collected_leaves_its_accountant_state_to_the_next_setup(
    tmp_path: Path,
) -> None:
    train_at_setup(_message(1), _context(tmp_path), _train)  # round 1 aborted after setup
    later = _context(tmp_path)
    later.state["privacy-state"] = ConfigRecord({"rounds": 0})  # what the node kept

    def train_from_adopted(msg: Message, context: Context) -> Message:
        assert context.state.config_records["privacy-state"]["rounds"] == 1
        return _train(msg, context)

    train_at_setup(_message(2), later, train_from_adopted)
    assert [p.name for p in (tmp_path / STASH_FOLDER).iterdir()] == [f"run-{RUN_ID}-round-2.reply"]


SETUP_PROCESS = """
import sys, time
import numpy as np
from flwr.app import ArrayRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.exit import exit as flower_exit
from flwr.supercore.task_identity import TaskIdentity
from client.after_reply import accept_deferred_work, run_deferred_work
from client.early_training import train_at_setup
TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, {run_id}, 5
context = Context(run_id={run_id}, node_id=5, node_config={{"state-dir": sys.argv[1]}},
                  state=RecordDict(), run_config={{}})
msg = Message(content=RecordDict({{"{model}": ArrayRecord([np.zeros(2, dtype=np.float32)])}}),
              dst_node_id=5, message_type=MessageType.TRAIN, group_id="4")
def train(msg, context):
    time.sleep(float(sys.argv[2]))
    arrays = ArrayRecord([np.full(2, 7.0, dtype=np.float32)])
    return Message(content=RecordDict({{"fitres.parameters": arrays}}), reply_to=msg)
accept_deferred_work()
assert train_at_setup(msg, context, train)
print("replied", flush=True)  # Flower's runtime has pushed the setup reply; now it exits:
flower_exit.FORCE_EXIT_TIMEOUT_SECONDS = 0.5  # flwr 1.41: 5 s, shortened for the test
try:
    flower_exit.flwr_exit(0)  # its timer ends this process by force 0.5 s from now
except SystemExit:
    run_deferred_work()  # what client/warm_clientapps.py does next
"""


def _setup_process(state_dir: Path, train_seconds: float) -> int:
    """Run a setup message's process to its end; the pid of the training it left running."""
    code = textwrap.dedent(SETUP_PROCESS).format(run_id=RUN_ID, model=FIT_INS_MODEL)
    output = state_dir / "setup-process.out"  # a file: the training child keeps it open
    with output.open("w") as out:
        process = subprocess.run(
            [sys.executable, "-c", code, str(state_dir), str(train_seconds)],
            stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2],
            timeout=60, check=False,
        )  # fmt: skip
    said = output.read_text()
    assert process.returncode == 0 and said.startswith("replied\n"), said
    pending = state_dir / STASH_FOLDER / f"run-{RUN_ID}-round-4.pending"
    return int(json.loads(pending.read_text())["pid"])


def test_on_a_hospitals_node_the_training_outlives_the_setup_process_and_the_stage_waits(
    tmp_path: Path,
) -> None:
    trainer = _setup_process(tmp_path, train_seconds=1.5)  # past Flower's forced exit
    started = time.monotonic()
    reply = reply_trained_at_setup(_message(4, with_model=False), _context(tmp_path))
    assert time.monotonic() - started > 0.2  # it waited for the training, still running
    assert reply is not None
    array = reply.content.array_records["fitres.parameters"].to_numpy_ndarrays()[0]
    np.testing.assert_array_equal(array, [7.0, 7.0])
    assert _ends_within(trainer, 10.0)  # its work done, the training process exits


def _ends_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _running(pid)


def test_a_training_process_killed_is_named_at_the_masked_vector_stage(tmp_path: Path) -> None:
    trainer = _setup_process(tmp_path, train_seconds=60.0)
    os.kill(trainer, signal.SIGKILL)
    assert _ends_within(trainer, 10.0)
    with pytest.raises(EarlyTrainingError, match=rf"process {trainer}, stopped without"):
        reply_trained_at_setup(_message(4, with_model=False), _context(tmp_path))


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (an exited orphan is reaped by init)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
