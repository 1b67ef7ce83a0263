"""Whether a training job did its work, judged from its run folder: the error to end with if not.

Both environments end a job the same way: `medfed-sim run` and `medfed-server run` call
:func:`check_run_outcome` after `flwr run` returns.
"""

import json
from pathlib import Path
from typing import Any

from common.errors import BudgetRefusedError, JobIncompleteError, is_budget_refusal

__all__ = ["METRICS_FILE", "check_run_outcome"]

#: Written by the ServerApp's run recorder, rewritten every round.
METRICS_FILE = "metrics.json"


def _metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METRICS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _training_failures(
    metrics: dict[str, Any], job_round: int, budget_only: bool = False
) -> list[str]:
    """``site: reason`` for each site whose training failed in ``job_round``.

    With ``budget_only``, only the refusals on privacy-budget grounds.
    """
    return [
        f"{failure['site']}: {failure['reason']}"
        for failure in metrics.get("failures", [])
        if failure["round"] == job_round
        and failure["phase"] == "train"
        and (is_budget_refusal(failure["reason"]) or not budget_only)
    ]


def check_run_outcome(
    run_dir: Path, job_name: str, rounds: int, done: int, flwr_code: int, resume_hint: str
) -> None:
    """Raise unless the job completed ``rounds`` rounds, each with at least one site's update.

    Raises:
        BudgetRefusedError: the job stopped, or a round trained on no site, because sites
            refused on privacy-budget grounds.
        JobIncompleteError: the job stopped before its last round, or a round trained on no
            site, for another reason (every site failed, or none was available).
    """
    metrics = _metrics(run_dir)
    if flwr_code != 0 or done != rounds:
        stopped = (
            f"job {job_name} stopped after {done}/{rounds} round(s) (flwr exit {flwr_code}); "
            f"see {run_dir / 'run.log'}; continue it with `{resume_hint}`"
        )
        refusals = _training_failures(metrics, done + 1, budget_only=True)
        if refusals:
            raise BudgetRefusedError(f"{stopped}; refused: {'; '.join(refusals)}")
        raise JobIncompleteError(stopped)
    trained = {site["round"] for site in metrics.get("sites", []) if site["phase"] == "train"}
    for job_round in range(1, rounds + 1):
        if job_round in trained:
            continue
        untrained = (
            f"job {job_name}: round {job_round} trained on no site, the global model is unchanged"
        )
        refusals = _training_failures(metrics, job_round, budget_only=True)
        if refusals:
            raise BudgetRefusedError(f"{untrained}; refused: {'; '.join(refusals)}")
        failures = _training_failures(metrics, job_round)
        why = "; ".join(failures) if failures else f"the sites' errors are in {run_dir / 'run.log'}"
        raise JobIncompleteError(f"{untrained}; {why}")
