"""Flower's legacy round machinery, the only way flwr 1.41 runs SecAgg+: isolated here.

The ServerApp runs every round through ``DefaultWorkflow`` with a legacy strategy; with SecAgg+
its fit step is ``SecAggPlusWorkflow`` (Bell et al. 2020, eprint 2020/704). Nothing else in
server/ touches ``flwr.server.workflow`` or ``LegacyContext``; tests/server/test_flower_contract.py
fails loudly if a Flower upgrade changes what is used here.

Flower's workflow trusts every reply: one masked vector of the wrong shape or count makes its
sum raise (or silently truncate) and stops the job for every site. Here each reply of the
masked-vector and unmask stages is checked before Flower reads it; a malformed one is taken out
of the round, which SecAgg+ then treats as a site that dropped out after sharing its keys (its
pairwise masks are rebuilt from the other sites' shares, Bell et al. section 3), and reported
through ``on_rejected``. If too few sites remain, Flower halts the round and the global model
stays as it was.

Each setup message also carries the round's model and config (Flower sends them only with the
masked-vector stage): a site trains while the keys are exchanged (client/early_training.py),
says so in its setup reply, and its masked-vector message then goes without the model.

Sites send each masked entry in the bytes of the job's modulus (3 at 2**24,
:mod:`common.masked_packing`); an accepted reply is unpacked here to the integers Flower adds,
and each round quantises to as many levels as keep its sampled sites' sum below the modulus.
"""

import logging
import time
from collections.abc import Callable, Iterable
from typing import cast

from flwr.app import Context, Message, RecordDict
from flwr.common import ndarray_to_bytes
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common.recorddict_compat import recorddict_to_fitres
from flwr.server import Grid, LegacyContext, ServerConfig
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.supercore.inflatable.inflatable_utils import pull_objects
from flwr.supercore.run import Run

from common import message_keys as keys
from common.federation_job import SecureAggregationConfig
from common.masked_packing import quantization_levels, unpack_masked

logger = logging.getLogger(__name__)

__all__ = [
    "FEW_LEVELS",
    "REPLY_PART_BACKOFF_S",
    "REPLY_POLL_S",
    "RejectReply",
    "masked_reply_problem",
    "run_rounds",
    "shares_reply_problem",
    "shorten_reply_part_pulls",
    "widen_masked_vectors",
]

#: Seconds between the coordinator's checks for the sites' replies (Flower's in-memory grid
#: polls every 0.1 s, its HTTP grid every 3 s).
REPLY_POLL_S = 0.1
#: A site's reply is visible before all its parts have reached the SuperLink: the coordinator
#: asks for a missing part again after 0.1 s, then every 0.2 s (flwr 1.41 waits 1 s, 2 s, 4 s
#: ... up to 10 s, which each stage of a round can pay). The asks go to its own SuperLink.
REPLY_PART_BACKOFF_S = (0.1, 0.2)

#: Fewer quantisation levels than this (16 or more sites at a 24-bit modulus) are logged.
FEW_LEVELS = 2**20

#: Called with (node id, the name the reply claims or None, why it was taken out of the round).
RejectReply = Callable[[int, str | None, str], None]
#: Called with (node id, the error the site replied with) for a site whose stage failed.
FailedReply = Callable[[int, str], None]


def _vector_problem(index: int, blob: object, shape: tuple[int, ...], mod_range: int) -> str | None:
    what = "masked weight" if index == 0 else f"masked array {index - 1}"
    if not isinstance(blob, bytes):
        return f"{what} is not bytes"
    try:
        vector = unpack_masked(blob, shape, mod_range)  # its length is checked first
    except ValueError as error:
        return f"{what} has {error}"
    if vector.size and int(vector.max()) >= mod_range:
        return f"{what} has entries outside [0, {mod_range})"
    return None


def widen_masked_vectors(reply: RecordDict, shapes: list[tuple[int, ...]], mod_range: int) -> None:
    """A checked masked reply's packed vectors as the uint32 arrays Flower's workflow adds.

    Sites pack each masked entry into the modulus' bytes (``client.client_app``); Flower
    sums ``bytes_to_ndarray`` of each vector, so they are unpacked here, in the coordinator's
    memory, before it reads them. uint32 sums wrap modulo 2**32, a multiple of the modulus.
    """
    configs = reply.config_records[RECORD_KEY_CONFIGS]
    packed = cast(list[bytes], configs[Key.MASKED_PARAMETERS])
    configs[Key.MASKED_PARAMETERS] = [
        ndarray_to_bytes(unpack_masked(blob, shape, mod_range))
        for blob, shape in zip(packed, [(1,), *shapes], strict=True)
    ]


def masked_reply_problem(
    reply: RecordDict, shapes: list[tuple[int, ...]], mod_range: int, max_weight: float
) -> str | None:
    """Why a site's masked-vector reply (its content) cannot enter the masked sum; None if it can.

    ``shapes`` are the model's arrays; SecAgg+ puts the site's quantised weight first, shape (1,).
    """
    try:
        fit = recorddict_to_fitres(reply, keep_input=True)
    except (KeyError, TypeError, ValueError) as error:
        return f"its masked reply is not a training result ({type(error).__name__})"
    if not 0 <= fit.num_examples <= max_weight:
        return (
            f"its masked reply declares {fit.num_examples} training images, outside "
            f"[0, max_weight {max_weight:g}] (its masked weight would wrap around)"
        )
    configs = reply.config_records.get(RECORD_KEY_CONFIGS)
    vectors = None if configs is None else configs.get(Key.MASKED_PARAMETERS)
    if not isinstance(vectors, list):
        return "its masked reply holds no masked vectors"
    expected = [(1,), *shapes]
    if len(vectors) != len(expected):
        return f"{len(vectors)} masked vectors where the model needs {len(expected)}"
    for index, (blob, shape) in enumerate(zip(vectors, expected, strict=True)):
        problem = _vector_problem(index, blob, shape, mod_range)
        if problem is not None:
            return problem
    return None


def shares_reply_problem(reply: RecordDict, sampled: set[int]) -> str | None:
    """Why a site's unmask reply (key shares per node) cannot be used; None when it can."""
    configs = reply.config_records.get(RECORD_KEY_CONFIGS)
    nodes = None if configs is None else configs.get(Key.NODE_ID_LIST)
    shares = None if configs is None else configs.get(Key.SHARE_LIST)
    if not isinstance(nodes, list) or not isinstance(shares, list) or len(nodes) != len(shares):
        return "its unmask reply does not pair node ids with key shares"
    if not all(isinstance(node, int) and node in sampled for node in nodes):
        return "its unmask reply names nodes outside the round"
    if not all(isinstance(share, bytes) for share in shares):
        return "its unmask reply holds key shares that are not bytes"
    return None


def _claimed_name(reply: RecordDict) -> str | None:
    try:
        name = recorddict_to_fitres(reply, keep_input=True).metrics.get(keys.SITE_NAME)
    except (KeyError, TypeError, ValueError):
        return None
    return name if isinstance(name, str) else None


class _DelegatingGrid(Grid):
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


class _PromptGrid(_DelegatingGrid):
    """Replies collected every ``REPLY_POLL_S`` instead of flwr 1.41 HttpGrid's fixed 3 s.

    Each stage of a round waits for its last reply; with a 3 s poll a stage lasts a multiple
    of 3 s, which SecAgg+'s three key stages pay three times per round. Polling the
    coordinator's own SuperLink (loopback) more often costs a few cheap requests a second.
    """

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``, then pull until every reply is in or ``timeout`` has passed."""
        waiting = set(self._grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting and (deadline is None or time.monotonic() < deadline):
            pulled = list(self._grid.pull_messages(waiting))
            replies += pulled
            waiting -= {reply.metadata.reply_to_message_id for reply in pulled}
            if waiting:
                time.sleep(REPLY_POLL_S)
        return replies


class _CheckedGrid(_DelegatingGrid):
    """The workflow's grid with the replies ``check`` refuses taken out of each batch."""

    def __init__(
        self, grid: Grid, check: Callable[[RecordDict], str | None], reject: RejectReply
    ) -> None:
        super().__init__(grid)
        self._check, self._reject = check, reject

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Flower's replies, less the well-delivered ones that fail the check."""
        kept = []
        for reply in self._grid.send_and_receive(messages, timeout=timeout):
            problem = None if reply.has_error() else self._check(reply.content)
            if problem is None:
                kept.append(reply)
            else:
                self._reject(reply.metadata.src_node_id, _claimed_name(reply.content), problem)
        return kept


class _FailureNotingGrid(_DelegatingGrid):
    """The workflow's grid, telling ``on_failed`` of every reply that carries a site's error.

    Flower's SecAgg+ workflow drops such a site without a word, and halts the round when too
    few remain: without this, a round every site failed would leave no reason behind.
    """

    def __init__(self, grid: Grid, on_failed: FailedReply) -> None:
        super().__init__(grid)
        self._on_failed = on_failed

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Flower's replies, unchanged; the failed ones' senders and errors are passed on."""
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            if reply.has_error():
                self._on_failed(reply.metadata.src_node_id, reply.error.reason or "no reason")
        return replies


def _with_content(msg: Message, content: RecordDict) -> Message:
    """``msg`` as Flower's workflow made it, with other content."""
    meta = msg.metadata
    return Message(
        content=content,
        dst_node_id=meta.dst_node_id,
        message_type=meta.message_type,
        group_id=meta.group_id,
    )


class _ModelAtSetupGrid(_DelegatingGrid):
    """Setup messages that also carry each site's fit instructions (the model and config).

    A site then trains while the round's keys are exchanged (client/early_training.py) and
    says so in its setup reply; ``trained_at_setup`` collects those sites.
    """

    def __init__(self, grid: Grid, state: WorkflowState, trained_at_setup: set[int]) -> None:
        super().__init__(grid)
        self._state, self._trained_at_setup = state, trained_at_setup

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Flower's setup messages with the fit instructions added; its replies unchanged."""
        sent = []
        for msg in messages:
            content = RecordDict(dict(msg.content.items()))
            for name, record in self._state.nid_to_fitins[msg.metadata.dst_node_id].items():
                content[name] = record
            sent.append(_with_content(msg, content))
        replies = list(self._grid.send_and_receive(sent, timeout=timeout))
        for reply in replies:
            configs = None if reply.has_error() else reply.content.config_records
            setup = None if configs is None else configs.get(RECORD_KEY_CONFIGS)
            if setup is not None and setup.get(keys.TRAINED_AT_SETUP) is True:
                self._trained_at_setup.add(reply.metadata.src_node_id)
        return replies


class _ModelOnceGrid(_DelegatingGrid):
    """Masked-vector messages without the model for the sites that trained at setup."""

    def __init__(self, grid: Grid, trained_at_setup: set[int]) -> None:
        super().__init__(grid)
        self._trained_at_setup = trained_at_setup

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Flower's messages, the model left out where the site already has it."""
        sent = []
        for msg in messages:
            if msg.metadata.dst_node_id in self._trained_at_setup:
                kept = {n: r for n, r in msg.content.items() if n != keys.FIT_INS_MODEL}
                msg = _with_content(msg, RecordDict(kept))  # noqa: PLW2901
            sent.append(msg)
        return self._grid.send_and_receive(sent, timeout=timeout)


class _CheckedSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow that takes malformed replies out before it reads them."""

    def __init__(
        self,
        secure: SecureAggregationConfig,
        model_shapes: list[tuple[int, ...]],
        on_rejected: RejectReply,
        on_failed: FailedReply,
    ) -> None:
        self.model_shapes = model_shapes  # what every masked vector must fit
        self._round: WorkflowState | None = None
        self._trained_at_setup: set[int] = set()
        self._warned = False
        super().__init__(
            num_shares=secure.num_shares,
            reconstruction_threshold=secure.reconstruction_threshold,
            max_weight=secure.max_weight,
            clipping_range=secure.clipping_range,
            modulus_range=2**secure.modulus_bits,
            timeout=secure.timeout_s,
        )
        self.on_rejected, self.on_failed = on_rejected, on_failed

    def __call__(self, grid: Grid, context: Context) -> None:
        """Flower's SecAgg+ round, every stage's failed replies told to ``on_failed``."""
        super().__call__(_FailureNotingGrid(grid, self.on_failed), context)

    @property
    def quantization_range(self) -> int:
        """Levels for this round's sampled sites, so that their sum never wraps the modulus.

        Flower reads it in its setup stage right after sampling the round's sites (pinned by
        tests/test_flower_contract.py); before any round it assumes the fewest, 2. The first
        round given fewer than :data:`FEW_LEVELS` says so in the log.
        """
        sampled = len(getattr(self._round, "nid_to_fitins", None) or {})
        levels = quantization_levels(self.modulus_range, max(sampled, 2))
        if sampled and levels < FEW_LEVELS and not self._warned:
            self._warned = True
            logger.warning(
                "SecAgg+ quantises to %d levels for %d sites at modulus 2**%d (2**22 up to 3 "
                "sites): set secure_aggregation.modulus_bits = 32 for finer updates",
                levels, sampled, self.modulus_range.bit_length() - 1,
            )  # fmt: skip
        return levels

    @quantization_range.setter
    def quantization_range(self, _levels: int) -> None:
        """Flower's constructor sets its default here; the levels follow the sampled sites."""

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Flower's setup stage, with quantisation levels for the sites it samples.

        Its messages also carry the round's model and config, so that the sites train while
        the keys are exchanged (:class:`_ModelAtSetupGrid`).
        """
        self._round = state
        self._trained_at_setup = set()
        early = _ModelAtSetupGrid(grid, state, self._trained_at_setup)
        return bool(super().setup_stage(early, context, state))

    def collect_masked_vectors_stage(
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        """Flower's stage on the replies whose masked vectors fit the model."""
        shapes = self.model_shapes  # the strategy's: the sites get the model packed

        def check(reply: RecordDict) -> str | None:
            problem = masked_reply_problem(reply, shapes, state.mod_range, state.max_weight)
            if problem is None:
                widen_masked_vectors(reply, shapes, state.mod_range)
            return problem

        once = _ModelOnceGrid(grid, self._trained_at_setup)
        checked = _CheckedGrid(once, check, self.on_rejected)
        return bool(super().collect_masked_vectors_stage(checked, context, state))

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Flower's stage on the replies whose key shares are well formed."""
        sampled = set(state.sampled_node_ids)
        checked = _CheckedGrid(
            grid, lambda reply: shares_reply_problem(reply, sampled), self.on_rejected
        )
        return bool(super().unmask_stage(checked, context, state))


def _ignore(_node: int, _name: str | None, _reason: str) -> None:
    return None


def _ignore_failure(_node: int, _error: str) -> None:
    return None


def _fit_workflow(
    secure: SecureAggregationConfig,
    model_shapes: list[tuple[int, ...]],
    on_rejected: RejectReply = _ignore,
    on_failed: FailedReply = _ignore_failure,
) -> SecAggPlusWorkflow | None:
    if not secure.enabled:
        return None
    return _CheckedSecAggPlus(secure, model_shapes, on_rejected, on_failed)


def shorten_reply_part_pulls() -> None:
    """Make this process's pulls of a reply's parts retry after :data:`REPLY_PART_BACKOFF_S`."""
    defaults = pull_objects.__kwdefaults__
    if defaults is None or not {"initial_backoff", "backoff_cap"} <= defaults.keys():
        raise RuntimeError("flwr's pull_objects has no backoff: see test_flower_contract")
    defaults["initial_backoff"], defaults["backoff_cap"] = REPLY_PART_BACKOFF_S


def run_rounds(
    grid: Grid,
    context: Context,
    strategy: Strategy,
    rounds: int,
    secure: SecureAggregationConfig,
    model_shapes: list[tuple[int, ...]],
    round_timeout_s: float | None = None,
    on_rejected: RejectReply = _ignore,
    on_failed: FailedReply = _ignore_failure,
) -> None:
    """Run ``rounds`` rounds of ``strategy`` on the sites of ``grid``, with SecAgg+ if enabled.

    ``model_shapes`` are the global model's tensors, which every masked vector must fit.
    ``round_timeout_s`` bounds how long a plain round waits for its replies; sites that have
    not answered by then count as dropped for that round. Under SecAgg+ ``on_rejected`` hears
    of every malformed reply taken out of a round, ``on_failed`` of every site's error reply.
    """
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=rounds, round_timeout=round_timeout_s),
        strategy=strategy,
    )
    fit_workflow = _fit_workflow(secure, model_shapes, on_rejected, on_failed)
    workflow = DefaultWorkflow(fit_workflow=fit_workflow)
    shorten_reply_part_pulls()
    workflow(_PromptGrid(grid), legacy)
