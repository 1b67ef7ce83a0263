"""Side-by-side summary of a simulation run: federated vs pooled vs local, on the same test set."""

import json
import math
from pathlib import Path
from typing import Any

from common.tasks.metrics import CLASSIFICATION_METRICS
from common.tasks.threshold import THRESHOLD

__all__ = ["summarise_run", "summary_table"]


def _final(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return rounds[-1] if rounds else {}


def summarise_run(
    run_dir: Path,
    baselines: dict[str, dict[str, Any]],
    metric_names: tuple[str, ...] = CLASSIFICATION_METRICS,
) -> dict[str, Any]:
    """Final test metrics per approach; written to summary.json and summary.md in ``run_dir``."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    global_rounds = metrics["global"]
    last_round = max(global_rounds, key=int)
    rows: dict[str, dict[str, Any]] = {"federated": dict(global_rounds[last_round])}
    site_eps = [s["epsilon"] for s in metrics["sites"] if s["phase"] == "train" and "epsilon" in s]
    if site_eps:
        rows["federated"]["epsilon"] = max(site_eps)
    if "pooled" in baselines:
        rows["pooled"] = _final(baselines["pooled"]["rounds"])
    if "local" in baselines:
        per_site = {k: _final(v) for k, v in baselines["local"]["sites"].items()}
        for site_id, final in sorted(per_site.items()):
            rows[f"local site {site_id}"] = final
        rows["local (mean of sites)"] = {
            key: _nanmean([final.get(key) for final in per_site.values()])
            for key in (*metric_names, "epsilon")
        }
    summary = {"rounds": int(last_round), "metric_names": list(metric_names), "test_metrics": rows}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (run_dir / "summary.md").write_text(summary_table(rows, metric_names) + "\n", encoding="utf-8")
    return summary


def _nanmean(values: list[Any]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else None


def summary_table(
    rows: dict[str, dict[str, Any]], metric_names: tuple[str, ...] = CLASSIFICATION_METRICS
) -> str:
    """A Markdown table: one row per approach, one column per metric (test set).

    A ``threshold`` column shows the decision threshold chosen on validation data where a row
    has one ("-": at argmax).
    """
    chosen = [THRESHOLD] if any(THRESHOLD in metrics for metrics in rows.values()) else []
    columns = [*metric_names, *chosen, "epsilon"]
    lines = [
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, metrics in rows.items():
        cells = []
        for column in columns:
            value = metrics.get(column)
            cells.append(
                "-" if value is None or not math.isfinite(float(value)) else f"{value:.3f}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
