"""A SecAgg+ round's training, started at its setup stage instead of at its masked-vector stage.

Flower's SecAgg+ round has four exchanges: setup (public keys), key shares, masked vectors and
unmasking; the site trains in the third. The coordinator (server/secure_rounds.py) also sends
the round's model and config with the setup message, and a site with a state folder trains
from it there: on a hospital's node after its setup reply has left (client/after_reply.py), so
that the key-share exchange runs while it trains; elsewhere (Flower's Simulation Engine) before
replying. The result (the very reply the masked-vector stage would have computed, and the
context records the training changed, such as the privacy accountant's state) waits in the
site's state folder until that stage masks and sends it. It never leaves the site unmasked.

A failure (a budget refusal, a scripted drop-out) is kept as text and raised at the
masked-vector stage, where Flower's SecAgg+ expects it: the site then drops out after sharing
its keys, and its masks are rebuilt from the other sites' shares.
"""

import json
import logging
import os
import select
import time
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from client.after_reply import announce_started, defer
from client.flower_internals import RECORD_KEY_STATE
from client.site_context import site_state_dir
from common.atomic_file import replaced_atomically
from common.errors import MedfedError
from common.message_keys import FIT_INS_MODEL

__all__ = [
    "STASH_FOLDER",
    "EarlyTrainingError",
    "carries_model",
    "reply_trained_at_setup",
    "train_at_setup",
]

logger = logging.getLogger(__name__)

#: Under the site's state folder: each round's result until its masked-vector stage takes it.
STASH_FOLDER = "early-training"
#: Context records kept with a result are named with this prefix.
_STATE_PREFIX = "context-state:"
#: The masked-vector stage sleeps until the training process exits (Linux's pidfd), looking
#: again at least this often; where a pidfd cannot be had, it looks every ``_WAIT_POLL_S``.
_WAIT_RECHECK_S = 1.0
_WAIT_POLL_S = 0.02
#: A result no stage has taken for this long (an aborted run's) is deleted.
STALE_AFTER_S = 24 * 3600.0


class EarlyTrainingError(MedfedError):
    """The training started at setup failed or stopped; the message says why."""


@dataclass(frozen=True)
class _Stash:
    folder: Path
    run_id: int
    server_round: int

    def _file(self, suffix: str) -> Path:
        return self.folder / f"run-{self.run_id}-round-{self.server_round}.{suffix}"

    @property
    def pending(self) -> Path:
        return self._file("pending")

    @property
    def reply(self) -> Path:
        return self._file("reply")

    @property
    def failure(self) -> Path:
        return self._file("failure")


def carries_model(msg: Message) -> bool:
    """Whether a SecAgg+ message carries the round's model (Flower's fit instructions)."""
    return FIT_INS_MODEL in msg.content.array_records


def _stash(context: Context, msg: Message) -> _Stash | None:
    folder = site_state_dir(context)
    group = msg.metadata.group_id
    if folder is None or not group.isdigit():
        return None
    return _Stash(folder / STASH_FOLDER, msg.metadata.run_id, int(group))


def _write_atomically(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    with replaced_atomically(path) as partial, open(os.open(partial, flags, 0o600), "wb") as file:
        file.write(data)  # readable by the site's account only


def _restore(path: Path, context: Context) -> RecordDict:
    """A kept result's reply content; its context records are put back into ``context``.

    A file that does not read as one is moved aside to ``<name>.damaged`` and named in the
    :class:`EarlyTrainingError` raised.
    """
    try:
        records = recorddict_from_proto(RecordDictProto.FromString(path.read_bytes()))
    except (DecodeError, ValueError, TypeError) as error:
        damaged = path.with_name(path.name + ".damaged")
        path.replace(damaged)
        raise EarlyTrainingError(
            f"{path}: not a training result this site kept ({error}); moved to {damaged.name}"
        ) from error
    for name in [name for name in records if name.startswith(_STATE_PREFIX)]:
        context.state[name.removeprefix(_STATE_PREFIX)] = records.pop(name)
    return records


def _train_into(
    stash: _Stash, msg: Message, context: Context, call_next: ClientAppCallable
) -> None:
    """Train the round from ``msg`` and keep its reply (or why it failed) in ``stash``."""
    try:
        reply = call_next(msg, context)
        if reply.has_error():
            raise EarlyTrainingError(reply.error.reason or "the training replied with an error")
        kept = RecordDict(dict(reply.content.items()))
        for name, record in context.state.items():
            if name != RECORD_KEY_STATE:  # SecAgg+'s own state moves on without the training
                kept[_STATE_PREFIX + name] = record
        _write_atomically(stash.reply, recorddict_to_proto(kept).SerializeToString())
    except Exception as error:
        named = isinstance(error, EarlyTrainingError)
        reason = str(error) if named else f"{type(error).__name__}: {error}"
        _write_atomically(stash.failure, reason.encode())
    finally:
        stash.pending.unlink(missing_ok=True)


def _clear_earlier(stash: _Stash, context: Context) -> None:
    """Take up what earlier rounds of the run trained but never sent; delete stale results.

    A round whose masked-vector stage never came (too few sites, a coordinator restart) still
    trained: its context records (the privacy accountant's state) are kept, as they would have
    been had it sent its update, and its update is deleted.
    """
    now = time.time()
    kept = sorted((path.stat().st_mtime, path) for path in stash.folder.glob("run-*-round-*.*"))
    for modified, path in kept:
        of_run = path.name.startswith(f"run-{stash.run_id}-round-")
        if of_run and path.suffix == ".reply" and path != stash.reply:
            try:
                _restore(path, context)
            except EarlyTrainingError as error:  # moved aside: this round trains all the same
                logger.warning("%s", error)
                continue
            path.unlink(missing_ok=True)
        elif (of_run and path.suffix in (".reply", ".failure")) or now - modified > STALE_AFTER_S:
            path.unlink(missing_ok=True)


def _mark_pending(stash: _Stash) -> None:
    """Put this process on record as the one that will write the round's result."""
    _write_atomically(stash.pending, json.dumps({"pid": os.getpid()}).encode())


def train_at_setup(msg: Message, context: Context, call_next: ClientAppCallable) -> bool:
    """Start the round's training from a setup message carrying the model; True if started.

    On a hospital's node it runs once the setup reply has left, in a process of its own
    (client/after_reply.py); elsewhere it runs now.
    """
    stash = _stash(context, msg)
    if stash is None or not carries_model(msg):
        return False
    try:
        stash.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _clear_earlier(stash, context)  # this round's own files too
        _mark_pending(stash)
    except OSError as error:  # the round then trains at its masked-vector stage, as Flower's
        logger.warning("cannot keep the round's training in %s (%s)", stash.folder, error)
        return False
    replying = os.getpid()

    def work() -> None:
        if os.getpid() != replying:  # deferred to a child: it writes the result
            _mark_pending(stash)
        announce_started()  # the process that will write the result is now on record
        _train_into(stash, msg, context, call_next)

    if not defer(work):
        work()
    return True


def _training_pid(stash: _Stash) -> int | None:
    try:
        return int(json.loads(stash.pending.read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; an exited process not yet reaped (a zombie) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state follows the parenthesised command name
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _wait_for_exit(pid: int, timeout: float) -> None:
    """Sleep until ``pid`` exits or ``timeout`` passes, without polling where Linux allows."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd here, or the process is already gone
        time.sleep(_WAIT_POLL_S)
        return
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)


def _take_result(stash: _Stash, msg: Message, context: Context) -> Message | None:
    if stash.reply.exists():
        content = _restore(stash.reply, context)
        stash.reply.unlink(missing_ok=True)
        return Message(content=content, reply_to=msg)
    if stash.failure.exists():
        reason = stash.failure.read_text(errors="replace")
        stash.failure.unlink(missing_ok=True)
        raise EarlyTrainingError(reason)
    return None


def reply_trained_at_setup(msg: Message, context: Context) -> Message | None:
    """The round's reply trained at its setup stage, waiting while it trains; None if none was.

    Raises :class:`EarlyTrainingError` with the training's own reason if it failed, or if its
    process stopped without a result.
    """
    stash = _stash(context, msg)
    if stash is None:
        return None
    while True:
        result = _take_result(stash, msg, context)
        if result is not None:
            return result
        pid = _training_pid(stash)
        if pid is None or not _alive(pid):
            result = _take_result(stash, msg, context)  # it may have finished just now
            if result is not None or pid is None:
                return result
            stash.pending.unlink(missing_ok=True)
            raise EarlyTrainingError(
                f"the round's training, started at setup in process {pid}, stopped without a result"
            )
        _wait_for_exit(pid, _WAIT_RECHECK_S)
