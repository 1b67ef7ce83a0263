"""The coordinator's strategy: validate the sites' weight deltas, combine them, apply, record.

Built on Flower's legacy FedAvg because flwr 1.41 offers SecAgg+ only through its legacy
workflow (see :mod:`server.secure_rounds`). Sites send weight *deltas*; the strategy averages
them or combines them by a robust rule (:mod:`server.delta_aggregation`; under SecAgg+ the
average arrives already unmasked, the strategy never sees one site's delta) and applies the
result with the job's server optimizer: plain addition for FedAvg (McMahan et al. 2017) and
FedProx (Li et al. 2020), Adam for FedAdam (Reddi et al. 2021, arXiv:2003.00295). A round is
complete once its evaluation is aggregated: only then is the global model checkpointed, so a
resumed job repeats no completed round and loses none.
"""

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from common import message_keys as keys
from common.federation_job import FederationJob
from common.model_packing import pack_arrays
from common.tasks.registry import task_for
from common.tasks.threshold import THRESHOLD, choose_threshold, decode_counts
from common.update_encoding import UpdateDecodingError, decode_update
from server.delta_aggregation import aggregate_deltas
from server.metric_aggregation import (
    MAX_METRIC_KEY_CHARS,
    MAX_METRIC_TEXT_CHARS,
    aggregate_metric_dicts,
    bounded_site_metrics,
    site_metric_allowance,
)
from server.run_recorder import RunRecorder
from server.update_validation import update_problem

__all__ = ["FIT_SECONDS", "DeltaFedAvg", "RoundHooks"]

logger = logging.getLogger(__name__)

#: Recorded per round: seconds from sending the round's first message to the new global model.
FIT_SECONDS = "fit_seconds"

#: Slack on max_update_norm: float32 rounding of a site's clipped delta; under SecAgg+ also
#: the quantisation error of the unmasked mean (2**22 levels over +-clipping_range per entry).
NORM_SLACK = 1.001
SECURE_NORM_SLACK = 1.1


@dataclass
class RoundHooks:
    """What the strategy calls beyond Flower's: checkpointing and central evaluation."""

    #: Called with (job round, global state, metrics) once a round is complete.
    checkpoint: Callable[[int, dict[str, torch.Tensor], dict[str, float]], object]
    #: Global state -> metrics on a held-out test set (simulations hold one), or None.
    evaluate: Callable[[dict[str, torch.Tensor]], dict[str, float]] | None = None
    #: Threshold -> the last evaluated global model's test metrics at it, or None.
    evaluate_at: Callable[[float], dict[str, float]] | None = None
    #: Global state -> the decision threshold chosen on the coordinator's own labelled data
    #: (the job's threshold_data), or None: chosen on the sites' validation counts.
    threshold: Callable[[dict[str, torch.Tensor]], float | None] | None = None
    #: Round numbers of this run follow the ``completed_rounds`` of a resumed job.
    completed_rounds: int = 0
    #: Node ID -> the name the coordinator enrolled it under, which the SuperLink tied to the
    #: node's authenticated key (empty in a simulation). It names the site in every record,
    #: whatever name its replies give.
    enrolled_names: Callable[[], dict[int, str]] | None = None
    #: Node ID -> the name its replies give, for nodes not enrolled by name (simulated sites).
    site_names: dict[int, str] = field(default_factory=dict)


def _failure_reason(failure: object) -> str:
    """A failed reply's reason in one line: the site's own message, not the transport's trace."""
    if isinstance(failure, tuple):
        text = str(failure[1].status.message)
    elif isinstance(failure, BaseException) and failure.args:
        error = failure.args[0]  # Flower wraps the reply's Error(code, reason)
        text = str(getattr(error, "reason", error))
    else:
        text = str(failure)
    if "Message: " in text:  # a ClientApp's exception, wrapped by Flower (and Ray)
        text = text.rsplit("Message: ", 1)[1].removesuffix("'>")
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "no reply")[:500]


class _ServerAdam:
    """Adam on the global model with the averaged delta as the negative pseudo-gradient."""

    def __init__(self, arrays: list[np.ndarray], learning_rate: float) -> None:
        self.params = [torch.zeros(a.shape, dtype=torch.float64) for a in arrays]
        # Flower's FedAdam defaults: beta_1 0.9, beta_2 0.99, tau 1e-9.
        self.optimizer = torch.optim.Adam(
            self.params, lr=learning_rate, betas=(0.9, 0.99), eps=1e-9
        )

    def step(self, arrays: list[np.ndarray], deltas: NDArrays) -> list[np.ndarray]:
        for param, array, delta in zip(self.params, arrays, deltas, strict=True):
            param.data = torch.from_numpy(array.astype(np.float64))
            param.grad = -torch.from_numpy(np.asarray(delta, dtype=np.float64))
        self.optimizer.step()
        return [
            p.detach().numpy().astype(a.dtype) for p, a in zip(self.params, arrays, strict=True)
        ]


class DeltaFedAvg(FedAvg):
    """Validated deltas combined by the job's rule, applied by its optimizer; records replies."""

    def __init__(
        self,
        job: FederationJob,
        global_state: dict[str, torch.Tensor],
        recorder: RunRecorder,
        hooks: RoundHooks,
        min_sites: int,
    ) -> None:
        self.job = job
        self.names = list(global_state)
        self.global_arrays = [t.detach().cpu().numpy() for t in global_state.values()]
        self.recorder = recorder
        self.hooks = hooks
        self._adam = (
            _ServerAdam(self.global_arrays, job.strategy.server_learning_rate)
            if job.strategy.name == "fedadam"
            else None
        )
        self._fit_started = time.monotonic()
        self._sampled: list[int] = []
        self._rejected: set[int] = set()
        self._failed: list[str] = []  # reasons of error replies already recorded with their site
        self._round = hooks.completed_rounds
        self._fit_metrics: dict[str, Scalar] = {}
        self._enrolled: dict[int, str] = {}
        self._enrolled_read_in: int | None = None  # the round the enrolled names were read in
        task_metrics = len(task_for(job.task).metric_names)
        self._metric_allowance = site_metric_allowance(task_metrics, job.num_classes)
        offset = hooks.completed_rounds
        super().__init__(
            fraction_fit=job.site_fraction,
            fraction_evaluate=job.site_fraction,
            min_fit_clients=min_sites,
            min_evaluate_clients=min_sites,
            min_available_clients=min_sites,
            initial_parameters=self.sent_model(),
            on_fit_config_fn=lambda r: {keys.SERVER_ROUND: r + offset},
            on_evaluate_config_fn=lambda r: {keys.SERVER_ROUND: r + offset},
        )

    def sent_model(self) -> Parameters:
        """The global model as the sites receive it: one packed vector (common.model_packing)."""
        return ndarrays_to_parameters([pack_arrays(self.global_arrays)])

    def _job_round(self, server_round: int) -> int:
        return server_round + self.hooks.completed_rounds

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Start the round's clock (SecAgg+ calls this at its first stage)."""
        self._fit_started = time.monotonic()
        self._round, self._rejected, self._failed = self._job_round(server_round), set(), []
        instructions = super().configure_fit(server_round, parameters, client_manager)
        self._sampled = [proxy.node_id for proxy, _ in instructions]
        return instructions

    def reject_reply(self, node_id: int, claimed_name: str | None, reason: str) -> None:
        """Record a SecAgg+ reply taken out of the round before Flower read it (malformed)."""
        if claimed_name is not None and node_id not in self.hooks.site_names:
            self.hooks.site_names[node_id] = claimed_name
        self._rejected.add(node_id)
        self.recorder.record_rejection(self._round, node_id, self._site(node_id), reason)

    def fail_reply(self, node_id: int, error: str) -> None:
        """Record a site whose SecAgg+ stage replied with an error, with its reason.

        Flower's workflow keeps the error without its sender, and a round it halts (too few
        sites left) never reaches :meth:`aggregate_fit`.
        """
        if node_id in self._rejected:
            return
        self._rejected.add(node_id)  # not counted again as a silent site
        reason = _failure_reason(error)
        self._failed.append(reason)  # nor its reason given to one
        self.recorder.record_failure("train", self._round, node_id, self._site(node_id), reason)

    def _enrolled_name(self, node_id: int) -> str | None:
        """The name ``node_id`` was enrolled under; the SuperLink is asked at most once a round."""
        read = self.hooks.enrolled_names
        unread = self._enrolled_read_in != self._round
        if node_id not in self._enrolled and read is not None and unread:
            self._enrolled_read_in = self._round
            self._enrolled = read()
        return self._enrolled.get(node_id)

    def _site(self, node_id: int) -> str:
        enrolled = self._enrolled_name(node_id)
        return enrolled or self.hooks.site_names.get(node_id, f"node {node_id}")

    def _record_replies(
        self, phase: str, job_round: int, replies: list[tuple[ClientProxy, FitRes | EvaluateRes]]
    ) -> None:
        """Record each reply's metrics, first cut to medfed's bounds (for every later use)."""
        for proxy, res in replies:
            res.metrics, dropped = bounded_site_metrics(res.metrics, self._metric_allowance)
            if dropped:
                logger.warning(
                    "round %d %s: %d metrics of node %d dropped (at most %d, names of at most "
                    "%d characters, texts of at most %d)", job_round, phase, dropped,
                    proxy.node_id, self._metric_allowance, MAX_METRIC_KEY_CHARS,
                    MAX_METRIC_TEXT_CHARS,
                )  # fmt: skip
            name, enrolled = res.metrics.get(keys.SITE_NAME), self._enrolled_name(proxy.node_id)
            if isinstance(name, str):
                self.hooks.site_names[proxy.node_id] = name
            if enrolled is not None and name != enrolled:  # a site cannot pass for another
                logger.warning(
                    "round %d %s: node %d, enrolled as %s, names itself %.100r; recorded as %s",
                    job_round, phase, proxy.node_id, enrolled, name, enrolled,
                )  # fmt: skip
            site_metrics: dict[str, Scalar] = {keys.NUM_EXAMPLES: res.num_examples, **res.metrics}
            if enrolled is not None:
                site_metrics[keys.SITE_NAME] = enrolled
            if isinstance(res, EvaluateRes):
                site_metrics[keys.EVAL_LOSS] = res.loss
            self.recorder.record_site(phase, job_round, proxy.node_id, site_metrics)

    def _record_failures(
        self,
        phase: str,
        job_round: int,
        sampled: list[int],
        replied: set[int],
        failures: list[object],
    ) -> None:
        """Name each site that was asked and did not reply.

        Flower's legacy workflow keeps a failed reply's error but not its sender: the senders
        are the sites asked that did not answer. With one such site the reason is exact; with
        several, each is given all the reasons.
        """
        silent = [node for node in sampled if node not in replied | self._rejected]
        reasons = [_failure_reason(failure) for failure in failures]
        for named in self._failed:  # recorded with its site by fail_reply
            if named in reasons:
                reasons.remove(named)
        for index, node in enumerate(silent):
            paired = len(reasons) == len(silent)
            reason = reasons[index] if paired else "; ".join(reasons) or "no reply"
            self.recorder.record_failure(phase, job_round, node, self._site(node), reason)

    def _valid(
        self, job_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> list[tuple[NDArrays, int]]:
        """Decoded deltas and weights of the replies that fit the model; the rest is recorded.

        Every entry of a delta must be finite and within +-clipping_range (SecAgg+ clamps to
        it; a plain reply beyond it is refused), a site declares at least one training image
        (a weight of 0 or below would blow up the weighted mean), and no site weighs more than
        max_weight examples (SecAgg+ caps the weight there; a plain reply's claim is capped
        alike). The
        L2 norm of a plain delta, or of the unmasked SecAgg+ mean, must stay within
        max_update_norm, to which every honest site clips its own delta. Under SecAgg+ every
        reply carries the same unmasked mean: it is decoded and checked once.
        """
        secure = self.job.secure_aggregation
        bound = secure.clipping_range
        max_norm = secure.max_update_norm * (SECURE_NORM_SLACK if secure.enabled else NORM_SLACK)
        # A plain reply must carry the job's precision exactly; the unmasked SecAgg+ mean is
        # Flower's own decoding of the integer sum.
        dtype = None if secure.enabled else self.job.update_dtype
        checked: dict[int, tuple[NDArrays, str | None]] = {}
        kept = []
        for proxy, res in results:
            if res.num_examples < 1:
                reason = f"its reply declares {res.num_examples} training images (at least 1)"
                self.recorder.record_rejection(
                    job_round, proxy.node_id, self._site(proxy.node_id), reason
                )
                continue
            res.num_examples = min(res.num_examples, int(secure.max_weight))
            if id(res.parameters) not in checked:
                delta, problem = self._delta(res.parameters)
                if problem is None:
                    problem = update_problem(delta, self.global_arrays, bound, max_norm, dtype)
                if problem is None:  # float16 upcast before aggregate() multiplies by weights
                    delta = [
                        d.astype(np.promote_types(d.dtype, np.float32), copy=False) for d in delta
                    ]
                checked[id(res.parameters)] = (delta, problem)
            delta, problem = checked[id(res.parameters)]
            if problem is None:
                kept.append((delta, res.num_examples))
                continue
            what = "the unmasked SecAgg+ sum" if secure.enabled else "its update"
            self.recorder.record_rejection(
                job_round, proxy.node_id, self._site(proxy.node_id), f"{what}: {problem}"
            )
        return kept

    def _delta(self, parameters: Parameters) -> tuple[NDArrays, str | None]:
        """A reply's delta as arrays, or why it does not decode.

        A plain reply is one compressed byte array (:mod:`common.update_encoding`), inflated
        here to at most the model's size in the job's precision; under SecAgg+ the reply
        carries the unmasked mean as Flower decoded it.
        """
        try:
            sent = parameters_to_ndarrays(parameters)
        except ValueError as error:
            return [], f"arrays that do not load ({error})"
        if self.job.secure_aggregation.enabled:
            return sent, None
        shapes = [array.shape for array in self.global_arrays]
        try:
            return decode_update(sent, shapes, self.job.update_dtype), None
        except UpdateDecodingError as error:
            return [], str(error)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Validate, average and apply the deltas; record the sites' metrics and failures."""
        job_round = self._job_round(server_round)
        self._record_replies("train", job_round, list(results))
        replied = {proxy.node_id for proxy, _ in results}
        self._record_failures("train", job_round, self._sampled, replied, list(failures))
        valid = self._valid(job_round, results)
        metrics = aggregate_metric_dicts(
            [(res.num_examples, res.metrics) for _, res in results], keys.NUM_EXAMPLES
        )
        self._fit_metrics = dict(metrics)
        if not valid:
            logger.warning("round %d: no valid update; the global model is unchanged", job_round)
            return self.sent_model(), dict(metrics)
        deltas = aggregate_deltas(self.job.strategy, valid)
        if self._adam is not None:
            self.global_arrays = self._adam.step(self.global_arrays, deltas)
        else:
            self.global_arrays = [  # asarray: 0-d sums (batch norm's counters) are scalars
                np.asarray(g.astype(np.float64) + d).astype(g.dtype)
                for g, d in zip(self.global_arrays, deltas, strict=True)
            ]
        seconds = time.monotonic() - self._fit_started
        self.recorder.record_federated("train", job_round, {**metrics, FIT_SECONDS: seconds})
        return self.sent_model(), dict(metrics)

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """The global model on the held-out test set, where the run has one (simulations)."""
        if self.hooks.evaluate is None:
            return None
        metrics = self.hooks.evaluate(self.global_state())
        self.recorder.record_global(self._job_round(server_round), metrics)
        return float(metrics.get("loss", float("nan"))), dict(metrics)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Record each site's validation metrics, then checkpoint the completed round.

        A site's declared validation images weigh at most max_weight, as its training images
        do (counts beyond it are then left out of the threshold).
        """
        job_round = self._job_round(server_round)
        self._record_replies("evaluate", job_round, list(results))  # as the sites declared
        replied = {proxy.node_id for proxy, _ in results}
        self._record_failures("evaluate", job_round, self._sampled, replied, list(failures))
        for _, res in results:
            res.num_examples = min(res.num_examples, int(self.job.secure_aggregation.max_weight))
        metrics = aggregate_metric_dicts(
            [(res.num_examples, {keys.EVAL_LOSS: res.loss, **res.metrics}) for _, res in results],
            keys.NUM_EXAMPLES,
        )
        threshold = (
            self.hooks.threshold(self.global_state())
            if self.hooks.threshold is not None
            else self._validation_threshold(job_round, results)
        )
        if threshold is not None:
            metrics[THRESHOLD] = threshold
            tested = self.recorder.global_rounds.get(job_round)
            if tested is not None and self.hooks.evaluate_at is not None:
                self.recorder.record_global(
                    job_round, {**tested, **self.hooks.evaluate_at(threshold)}
                )
        if results:
            self.recorder.record_federated("evaluate", job_round, metrics)
        done = {**self._fit_metrics, **metrics}
        self.hooks.checkpoint(
            job_round,
            self.global_state(),
            {k: float(v) for k, v in done.items() if isinstance(v, int | float)},
        )
        self.recorder.round_done(job_round)
        loss = metrics.get(keys.EVAL_LOSS)
        return (float(loss) if isinstance(loss, int | float) else None), dict(metrics)

    def _validation_threshold(
        self, job_round: int, results: list[tuple[ClientProxy, EvaluateRes]]
    ) -> float | None:
        """The threshold of highest balanced accuracy on the sites' validation counts.

        With the mean as the job's aggregation rule, on the counts summed over sites; with a
        robust rule, the median of each site's own threshold, so that a minority of sites
        cannot set it (the model's decision threshold at every hospital). A site whose counts
        do not decode, or do not add up to the validation images it declared (at most
        max_weight), is left out and named in the log.
        """
        max_weight = self.job.secure_aggregation.max_weight
        valid: list[np.ndarray] = []
        for proxy, res in results:
            text = res.metrics.get(keys.SCORE_COUNTS)
            if text is None:
                continue
            try:
                counts = decode_counts(str(text))
                images = int(counts.sum())
                if images > max_weight:
                    raise ValueError(
                        f"score counts of {images} images, above the job's max_weight "
                        f"{max_weight:g}"
                    )
                if images != res.num_examples:
                    raise ValueError(
                        f"score counts add up to {images}, not the {res.num_examples} "
                        "validation images the site declared"
                    )
            except ValueError as error:
                site = self._site(proxy.node_id)
                logger.warning("round %d: site %s score counts ignored: %s", job_round, site, error)
                continue
            valid.append(counts)
        if not valid:
            return None
        if self.job.strategy.aggregation == "mean":
            return choose_threshold(np.sum(valid, axis=0))
        chosen = [t for t in map(choose_threshold, valid) if t is not None]
        return float(np.median(chosen)) if chosen else None

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Remember whom the round's evaluation asks (to name the sites that do not answer)."""
        instructions = super().configure_evaluate(server_round, parameters, client_manager)
        self._sampled = [proxy.node_id for proxy, _ in instructions]
        self._rejected, self._failed = set(), []
        return instructions

    def global_state(self) -> dict[str, torch.Tensor]:
        """The current global model as a state dict."""
        return {
            name: torch.from_numpy(array.copy())
            for name, array in zip(self.names, self.global_arrays, strict=True)
        }
