"""What the coordinator's SecAgg+ stages send beyond Flower's protocol, as grid wrappers.

Flower's SecAgg+ round (Bell et al. 2020) has four exchanges: setup (each site's public keys),
key shares, masked vectors and unmasking; the sites train in the third. Two changes shorten it,
each a wrapper around the grid Flower's workflow sends through:

- **Training early** (:class:`ModelEarlyGrid`, :class:`ModelOnceGrid`): the round's model and
  config go with the round's first message, a site trains while the keys are exchanged
  (client/early_training.py) and says so in its reply; its masked-vector message then goes
  without the model.
- **Keys a round ahead** (:class:`AnnouncedKeysGrid`, :class:`KeysAheadGrid`): each unmask
  message but the last round's asks the site for the next round's public keys, which it sends
  with its key shares (client/keys_ahead.py). When every site sampled for the next round
  announced them, that round's setup exchange is not sent: Flower's setup stage gets the
  announced keys as its replies, and the setup config (with the model) goes with the
  share-keys message. A round in which any sampled site announced none runs Flower's setup.

Keys are fresh for every round either way, and used for one round only.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server import Grid
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.supercore.run import Run

from common import message_keys as keys

__all__ = [
    "AnnouncedKeys",
    "AnnouncedKeysGrid",
    "DelegatingGrid",
    "KeysAheadGrid",
    "ModelEarlyGrid",
    "ModelOnceGrid",
    "public_key_problem",
]

logger = logging.getLogger(__name__)

#: Flower's SecAgg+ keys are PEM-encoded elliptic-curve keys on this curve (flwr 1.41's
#: ``generate_key_pairs``; tests/test_flower_contract.py pins it).
SECAGG_CURVE = "secp384r1"
#: A PEM public key on that curve is 215 bytes; anything far longer is not one.
MAX_PUBLIC_KEY_BYTES = 1024


class DelegatingGrid(Grid):
    """A grid that hands every call to the grid it wraps (subclasses change one of them)."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def set_run(self, run: Run) -> None:  # noqa: D102 (delegated)
        self._grid.set_run(run)

    @property
    def run(self) -> Run:  # noqa: D102
        return self._grid.run

    def create_message(  # noqa: D102
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self._grid.pull_messages(message_ids)

    def send_and_receive(  # noqa: D102
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)


def _with_content(msg: Message, content: RecordDict) -> Message:
    """``msg`` as Flower's workflow made it, with other content."""
    meta = msg.metadata
    return Message(
        content=content,
        dst_node_id=meta.dst_node_id,
        message_type=meta.message_type,
        group_id=meta.group_id,
    )


def _secagg_configs(msg: Message) -> ConfigRecord | None:
    if msg.has_error():
        return None
    return msg.content.config_records.get(RECORD_KEY_CONFIGS)


class ModelEarlyGrid(DelegatingGrid):
    """A stage's messages that also carry each site's fit instructions (model and config).

    Used on the round's first exchange: the setup, or the share-keys stage when the setup was
    skipped (then ``setups`` holds each site's setup config, sent along). A site trains from
    them while the keys are exchanged and says so in its reply; ``trained_early`` collects
    those sites.
    """

    def __init__(
        self,
        grid: Grid,
        state: WorkflowState,
        trained_early: set[int],
        setups: dict[int, ConfigRecord] | None = None,
    ) -> None:
        super().__init__(grid)
        self._state, self._trained_early, self._setups = state, trained_early, setups or {}

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Flower's messages with the fit instructions added; its replies unchanged."""
        sent = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            content = RecordDict(dict(msg.content.items()))
            for name, record in self._state.nid_to_fitins[node].items():
                content[name] = record
            if node in self._setups:
                content[keys.SECAGG_SETUP] = self._setups[node]
            sent.append(_with_content(msg, content))
        replies = list(self._grid.send_and_receive(sent, timeout=timeout))
        for reply in replies:
            configs = _secagg_configs(reply)
            if configs is not None and configs.get(keys.TRAINED_AT_SETUP) is True:
                self._trained_early.add(reply.metadata.src_node_id)
        return replies


class ModelOnceGrid(DelegatingGrid):
    """Masked-vector messages without the model for the sites that trained early."""

    def __init__(self, grid: Grid, trained_early: set[int]) -> None:
        super().__init__(grid)
        self._trained_early = trained_early

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Flower's messages, the model left out where the site already has it."""
        sent = []
        for msg in messages:
            if msg.metadata.dst_node_id in self._trained_early:
                kept = {n: r for n, r in msg.content.items() if n != keys.FIT_INS_MODEL}
                msg = _with_content(msg, RecordDict(kept))  # noqa: PLW2901
            sent.append(msg)
        return self._grid.send_and_receive(sent, timeout=timeout)


def public_key_problem(key: object) -> str | None:
    """Why ``key`` is not a SecAgg+ public key the sites can agree secrets with; None if it is."""
    if not isinstance(key, bytes) or not 0 < len(key) <= MAX_PUBLIC_KEY_BYTES:
        return "not a PEM public key of at most 1 KB"
    try:
        loaded = load_pem_public_key(key)
    except (ValueError, TypeError) as error:
        return f"not a PEM public key ({error})"
    if not isinstance(loaded, ec.EllipticCurvePublicKey) or loaded.curve.name != SECAGG_CURVE:
        return f"not an elliptic-curve key on {SECAGG_CURVE}"
    return None


@dataclass
class AnnouncedKeys:
    """Public keys (pk1, pk2) the sites announced for one round, by node id."""

    server_round: int = 0
    by_node: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)

    def for_round(self, server_round: int, nodes: Iterable[int]) -> dict[int, tuple[bytes, bytes]]:
        """Every node's keys for ``server_round``, or {} unless all of ``nodes`` announced them."""
        nodes = list(nodes)
        if server_round != self.server_round or not set(nodes) <= self.by_node.keys():
            return {}
        return {node: self.by_node[node] for node in nodes}


class AnnouncedKeysGrid(DelegatingGrid):
    """Unmask messages that ask each site for its public keys of the next round.

    The keys in the accepted replies are kept in ``announced`` (replacing any earlier round's);
    a reply whose keys are not well-formed keys on Flower's curve, or repeat another site's,
    announces none, and is logged.
    """

    def __init__(self, grid: Grid, last_round: int, announced: AnnouncedKeys) -> None:
        super().__init__(grid)
        self._last_round, self._announced = last_round, announced

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Flower's messages with the request added where a round follows; its replies as sent."""
        messages = list(messages)
        rounds = {int(msg.metadata.group_id) for msg in messages}
        next_round = max(rounds, default=self._last_round) + 1
        if next_round > self._last_round:
            return self._grid.send_and_receive(messages, timeout=timeout)
        ask = ConfigRecord({keys.KEYS_FOR_ROUND: next_round})
        sent = []
        for msg in messages:
            content = RecordDict(dict(msg.content.items()))
            content[keys.NEXT_ROUND_KEYS] = ask
            sent.append(_with_content(msg, content))
        replies = list(self._grid.send_and_receive(sent, timeout=timeout))
        self._announced.server_round, self._announced.by_node = next_round, {}
        seen: set[bytes] = set()
        for reply in replies:
            node = reply.metadata.src_node_id
            announced = None if reply.has_error() else reply.content.config_records.get(
                keys.NEXT_ROUND_KEYS
            )  # fmt: skip
            if announced is None:  # a site that does not announce keys: the round sets up
                continue
            pair = (announced.get(Key.PUBLIC_KEY_1), announced.get(Key.PUBLIC_KEY_2))
            problem = next(filter(None, map(public_key_problem, pair)), None)
            if announced.get(keys.KEYS_FOR_ROUND) != next_round:
                problem = f"they are for round {announced.get(keys.KEYS_FOR_ROUND)!r}"
            elif problem is None and (pair[0] == pair[1] or seen & set(pair)):
                problem = "they repeat a key already announced"
            if problem is not None:
                logger.warning("node %d's keys for round %d are not used: %s; that round "
                               "runs its setup exchange", node, next_round, problem)  # fmt: skip
                continue
            keys_pair = cast(tuple[bytes, bytes], pair)
            seen.update(keys_pair)
            self._announced.by_node[node] = keys_pair
        return replies


class KeysAheadGrid(DelegatingGrid):
    """A round's setup exchange answered from the keys its sites announced a round ahead.

    If every site of Flower's setup messages announced keys for this round, nothing is sent:
    each message's reply is made here from those keys, and its setup config is kept in
    ``setups`` for the share-keys stage to send (:class:`ModelEarlyGrid`). Otherwise the
    messages go to the grid this wraps. The announced keys are spent either way.
    """

    def __init__(
        self, grid: Grid, announced: AnnouncedKeys, setups: dict[int, ConfigRecord]
    ) -> None:
        super().__init__(grid)
        self._announced, self._setups = announced, setups

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """The sites' announced keys as Flower's setup replies, or the setup exchange itself."""
        messages = list(messages)
        rounds = {int(msg.metadata.group_id) for msg in messages}
        nodes = [msg.metadata.dst_node_id for msg in messages]
        ahead = self._announced.for_round(rounds.pop(), nodes) if len(rounds) == 1 else {}
        self._announced.by_node = {}  # one round's keys, used once
        self._setups.clear()
        if not ahead:
            return self._grid.send_and_receive(messages, timeout=timeout)
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            self._setups[node] = ConfigRecord(dict(msg.content.config_records[RECORD_KEY_CONFIGS]))
            pk1, pk2 = ahead[node]
            content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({
                Key.PUBLIC_KEY_1: pk1, Key.PUBLIC_KEY_2: pk2,
            })})  # fmt: skip
            replies.append(Message(content=content, reply_to=msg))
        logger.info("round %s: every site announced its keys a round ahead; no setup exchange",
                    messages[0].metadata.group_id)  # fmt: skip
        return replies
