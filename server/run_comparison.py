"""A simulation's report charts: the federated model against its baselines, and Dice per class."""

import json
from pathlib import Path
from typing import Any

from server.run_charts import Series, line_chart

__all__ = ["BASELINES_FILE", "baseline_chart", "class_dice_chart"]

#: Written by `medfed-sim run --baseline ...`: each baseline's per-round test metrics.
BASELINES_FILE = "baselines.json"
#: Per-class Dice in the global model's test metrics: ``dice_<segment name>``.
_DICE_PREFIX = "dice_"


def _series(rows: list[dict[str, Any]], metric: str) -> Series:
    return [
        (int(row["round"]), float(row[metric]))
        for row in rows
        if isinstance(row.get(metric), int | float)
    ]


def baseline_chart(run_dir: Path, tested: dict[str, dict[str, Any]], headline: str) -> str:
    """Test ``headline`` per round: federated, pooled and each site alone ("" without baselines)."""
    path = run_dir / BASELINES_FILE
    if not path.is_file():
        return ""
    baselines = json.loads(path.read_text(encoding="utf-8"))
    series: dict[str, Series] = {
        "federated": [
            (int(r), float(m[headline]))
            for r, m in tested.items()
            if int(r) > 0 and isinstance(m.get(headline), int | float)
        ]
    }
    if "pooled" in baselines:
        series["pooled"] = _series(baselines["pooled"].get("rounds", []), headline)
    for site, rows in sorted(baselines.get("local", {}).get("sites", {}).items()):
        series[f"site-{site} alone"] = _series(rows, headline)
    if len(series) == 1:
        return ""
    return line_chart(f"Test {headline}: federated vs baselines", series, headline)


def class_dice_chart(tested: dict[str, dict[str, Any]]) -> str:
    """The global model's test Dice of each segment class per round ("" when not segmenting)."""
    classes = sorted(
        {key for row in tested.values() for key in row if key.startswith(_DICE_PREFIX)}
    )
    series = {
        name.removeprefix(_DICE_PREFIX): [
            (int(r), float(m[name]))
            for r, m in tested.items()
            if int(r) > 0 and isinstance(m.get(name), int | float)
        ]
        for name in classes
    }
    return line_chart("Test Dice per class", series, "Dice") if series else ""
