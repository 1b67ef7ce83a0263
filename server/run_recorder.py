"""Write a run's metrics to its run folder as JSON and CSV after every round."""

import csv
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["RunRecorder"]

logger = logging.getLogger(__name__)

_SUMMARY_KEYS = ("roc_auc", "accuracy", "balanced_accuracy", "f1", "dice", "iou", "hd95")


def _clean(value: Any) -> Any:
    """JSON has no NaN: write undefined metrics as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunRecorder:
    """Collects global, aggregated and per-site metrics per round and rewrites the files each round.

    Files in ``run_dir``: metrics.json (everything), global_metrics.csv (the global model on the
    held-out test set), federated_metrics.csv (site metrics aggregated by the strategy),
    site_metrics.csv (one row per site, round and phase) and epsilon.csv (privacy spent).
    """

    def __init__(self, run_dir: Path, num_rounds: int) -> None:
        self.run_dir = run_dir
        self.num_rounds = num_rounds
        run_dir.mkdir(parents=True, exist_ok=True)
        self.global_rounds: dict[int, dict[str, float]] = {}
        self.federated: dict[str, dict[int, dict[str, float]]] = {"train": {}, "evaluate": {}}
        self.sites: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.rejections: list[dict[str, Any]] = []

    @classmethod
    def resume(cls, run_dir: Path, num_rounds: int, completed_rounds: int) -> "RunRecorder":
        """Continue the records in ``run_dir`` after ``completed_rounds``.

        Whatever was recorded of a later, interrupted round is dropped: that round runs again.
        """
        recorder = cls(run_dir, num_rounds)
        saved = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))

        def kept(rounds: dict[str, dict[str, float]]) -> dict[int, dict[str, float]]:
            return {int(r): m for r, m in rounds.items() if int(r) <= completed_rounds}

        recorder.global_rounds = kept(saved["global"])
        recorder.federated = {phase: kept(rounds) for phase, rounds in saved["federated"].items()}
        recorder.sites = [s for s in saved["sites"] if s["round"] <= completed_rounds]
        recorder.failures = [f for f in saved["failures"] if f["round"] <= completed_rounds]
        recorder.rejections = [
            r for r in saved.get("rejections", []) if r["round"] <= completed_rounds
        ]
        return recorder

    def record_site(
        self, phase: str, server_round: int, node_id: int, metrics: dict[str, Any]
    ) -> None:
        """One site's reply metrics."""
        self.sites.append({"round": server_round, "phase": phase, "node_id": node_id, **metrics})

    def record_failure(
        self, phase: str, server_round: int, node_id: int, site: str, reason: str
    ) -> None:
        """A site that did not reply, or replied with an error (its reason, never its data)."""
        self.failures.append(
            {
                "round": server_round,
                "phase": phase,
                "node_id": node_id,
                "site": site,
                "reason": reason,
                "time": time.time(),
            }
        )
        logger.warning("round %d %s: site %s dropped out: %s", server_round, phase, site, reason)

    def record_rejection(self, server_round: int, node_id: int, site: str, reason: str) -> None:
        """A site's update that was refused before aggregation (the round went on without it)."""
        self.rejections.append(
            {"round": server_round, "node_id": node_id, "site": site, "reason": reason}
        )
        logger.warning("round %d: update of site %s rejected: %s", server_round, site, reason)

    def record_federated(self, phase: str, server_round: int, metrics: dict[str, float]) -> None:
        """Metrics aggregated over sites by the strategy."""
        self.federated[phase][server_round] = metrics

    def record_global(self, server_round: int, metrics: dict[str, float]) -> None:
        """The global model's metrics on the held-out test set (round 0 = initial model)."""
        self.global_rounds[server_round] = metrics

    def round_done(self, server_round: int) -> None:
        """Rewrite the files and log one progress line for the round."""
        self.write()
        if server_round == 0:
            return
        parts = [f"round {server_round}/{self.num_rounds}"]
        source = self.global_rounds.get(server_round) or self.federated["evaluate"].get(
            server_round
        )
        if source:
            label = "global test" if server_round in self.global_rounds else "site val"
            shown = " ".join(f"{k}={source[k]:.3f}" for k in _SUMMARY_KEYS if k in source)
            parts.append(f"{label}: {shown}")
        epsilons = [
            s["epsilon"] for s in self.sites if s["round"] == server_round and "epsilon" in s
        ]
        if epsilons:
            parts.append(f"epsilon max={max(epsilons):.2f}")
        logger.info(" | ".join(parts))

    def write(self) -> None:
        """Write every file (small: rewritten whole each round)."""
        payload = {
            "global": {str(r): m for r, m in sorted(self.global_rounds.items())},
            "federated": {
                phase: {str(r): m for r, m in sorted(rounds.items())}
                for phase, rounds in self.federated.items()
            },
            "sites": self.sites,
            "failures": self.failures,
            "rejections": self.rejections,
        }
        text = json.dumps(_deep_clean(payload), indent=2)
        (self.run_dir / "metrics.json").write_text(text, encoding="utf-8")
        _write_csv(self.run_dir / "global_metrics.csv", _round_rows(self.global_rounds))
        _write_csv(
            self.run_dir / "federated_metrics.csv",
            [
                {"phase": phase, **row}
                for phase, rounds in self.federated.items()
                for row in _round_rows(rounds)
            ],
        )
        _write_csv(self.run_dir / "site_metrics.csv", self.sites)
        _write_csv(
            self.run_dir / "epsilon.csv",
            [
                {
                    "round": s["round"],
                    "site": s.get("site"),
                    "epsilon": s["epsilon"],
                    "delta": s.get("delta"),
                    "unit": s.get("privacy-unit"),
                }
                for s in self.sites
                if "epsilon" in s
            ],
        )


def _deep_clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_clean(v) for v in value]
    return _clean(value)


def _round_rows(rounds: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    return [{"round": r, **m} for r, m in sorted(rounds.items())]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
