"""One HTML page of a run folder: rounds, sites, metrics and privacy as charts.

The same page serves as the static report of a finished run (simulation or federation) and as
the coordinator's live dashboard, which adds the connected sites and the traffic per site.
Everything is read from the run folder's metrics.json, rewritten by the run after every round.
"""

import html
import json
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import message_keys as keys
from server.run_charts import Series, line_chart
from server.run_comparison import baseline_chart, class_dice_chart

__all__ = ["LiveStatus", "failure_sentence", "render_run_page", "write_report"]

REPORT_FILE = "report.html"
#: Round-table columns of each task, the headline metric first.
_COLUMNS = (
    ("roc_auc", "accuracy", "balanced_accuracy", "f1", "loss"),
    ("dice", "iou", "hd95", "loss"),
)


def _columns(rounds: list[dict[str, Any]]) -> tuple[str, ...]:
    """The columns of the task whose headline metric the rounds report."""
    return next((c for c in _COLUMNS if any(c[0] in r for r in rounds)), ("loss",))


@dataclass
class LiveStatus:
    """What only a running coordinator knows: its sites and the bytes they exchanged."""

    sites: list[tuple[str, str, str]] = field(default_factory=list)  # name, node id, status
    traffic: dict[str, tuple[int, int]] = field(default_factory=dict)  # site -> (up, down)


def _planned_rounds(run_dir: Path) -> int | None:
    for name, read in (("job.toml", tomllib.loads), ("config.json", json.loads)):
        path = run_dir / name
        if path.is_file():
            return int(read(path.read_text(encoding="utf-8")).get("rounds", 0)) or None
    return None


def _site_label(entry: dict[str, Any]) -> str:
    if "site" in entry:
        return str(entry["site"])
    return f"node {entry['node_id']}"


def _per_site(sites: list[dict[str, Any]], phase: str, metric: str) -> dict[str, Series]:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for entry in sites:
        value = entry.get(metric)
        if entry["phase"] == phase and isinstance(value, int | float):
            series[_site_label(entry)].append((int(entry["round"]), float(value)))
    return dict(sorted(series.items()))


def _rounds_of(table: dict[str, dict[str, Any]], metric: str) -> Series:
    return [
        (int(r), float(m[metric]))
        for r, m in table.items()
        if isinstance(m.get(metric), int | float)
    ]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _epsilon_unit(sites: list[dict[str, Any]]) -> str:
    """The unit the sites' epsilons protect, from their replies ("" when none says)."""
    units = {str(s[keys.PRIVACY_UNIT]) for s in sites if keys.PRIVACY_UNIT in s}
    if not units:
        return ""
    return f"per {units.pop()}" if len(units) == 1 else "per image (sites' units differ)"


def _round_table(metrics: dict[str, Any]) -> str:
    evaluated = metrics["federated"].get("evaluate", {})
    tested = metrics.get("global", {})
    rows = []
    columns = _columns([*evaluated.values(), *tested.values()])
    for r in sorted({*evaluated, *tested}, key=int):
        source = tested.get(r) or evaluated.get(r) or {}
        shown = [f"{source[k]:.3f}" if isinstance(source.get(k), float) else "" for k in columns]
        epsilons = [
            s[keys.EPSILON] for s in metrics["sites"]
            if s["round"] == int(r) and keys.EPSILON in s
        ]  # fmt: skip
        rows.append([r, *shown, f"{max(epsilons):.2f}" if epsilons else ""])
    label = "global model on the test set" if tested else "sites' validation (weighted mean)"
    unit = _epsilon_unit(metrics["sites"])
    return f"<h2>Rounds ({label})</h2>" + _table(
        ["round", *columns, f"epsilon {unit} (max over sites)".replace("  ", " ")], rows
    )


_PHASES = {"train": "training", "evaluate": "evaluation"}


def failure_sentence(failure: dict[str, Any]) -> str:
    """A failure or refusal as a sentence naming its site, round and phase, and why."""
    site = failure.get("site") or f"the site on node {failure.get('node_id', '?')}"
    phase = _PHASES.get(str(failure.get("phase")), str(failure.get("phase", "")))
    reason = str(failure.get("reason") or "no reply").strip().rstrip(".")
    return f"Round {failure['round']}, {phase}: {site} took no part ({reason[:300]})."


def _privacy_chart(sites: list[dict[str, Any]]) -> str:
    spent = _per_site(sites, "train", keys.EPSILON_SITE_TOTAL) or _per_site(
        sites, "train", keys.EPSILON
    )
    budgets = {
        f"{_site_label(s)} budget": float(s[keys.EPSILON_BUDGET])
        for s in sites
        if s["phase"] == "train" and keys.EPSILON_BUDGET in s
    }
    unit = _epsilon_unit(sites)
    return line_chart("Privacy spent per site", spent, f"epsilon {unit}".strip(), budgets)


def _live_section(live: LiveStatus) -> str:
    sites = _table(["site", "node id", "status"], [list(row) for row in live.sites])
    traffic = _table(
        ["site", "bytes sent to the coordinator", "bytes received"],
        [[name, f"{up:,}", f"{down:,}"] for name, (up, down) in sorted(live.traffic.items())],
    )
    return f"<h2>Connected sites</h2>{sites}<h2>Bytes exchanged</h2>{traffic}"


def render_run_page(run_dir: Path, live: LiveStatus | None = None, refresh_s: int = 0) -> str:
    """The HTML page of ``run_dir``; ``refresh_s`` > 0 makes the browser reload it."""
    metrics_file = run_dir / "metrics.json"
    metrics: dict[str, Any] = (
        json.loads(metrics_file.read_text(encoding="utf-8"))
        if metrics_file.is_file()
        else {"global": {}, "federated": {"train": {}, "evaluate": {}}, "sites": []}
    )
    sites = metrics["sites"]
    done = max((int(r) for r in metrics["federated"].get("evaluate", {})), default=0)
    planned = _planned_rounds(run_dir)
    names = sorted({_site_label(s) for s in sites})
    headline = _columns(sites)[0]
    charts = [
        line_chart(
            "Global model",
            {
                name: _rounds_of(table, headline)
                for name, table in (
                    ("test set", metrics.get("global", {})),
                    ("sites' validation", metrics["federated"].get("evaluate", {})),
                )
                if table
            },
            headline,
        ),
        line_chart(
            f"Validation {headline} per site", _per_site(sites, "evaluate", headline), headline
        ),
        line_chart("Training loss per site", _per_site(sites, "train", keys.TRAIN_LOSS), "loss"),
        _privacy_chart(sites),
    ]
    tested = metrics.get("global", {})
    if tested:  # a simulation: its baselines and, segmenting, each class's Dice
        test_headline = _columns(list(tested.values()))[0]
        charts += [baseline_chart(run_dir, tested, test_headline), class_dice_chart(tested)]
    drawn = [chart for chart in charts if chart]  # a chart without data is left out
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s > 0 else ""
    failures = metrics.get("failures", [])
    failure_items = "".join(f"<li>{html.escape(failure_sentence(f))}</li>" for f in failures)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{refresh}
<title>medfed run {html.escape(run_dir.name)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
figure {{ display: inline-block; margin: 0.5em; }}
</style></head><body>
<h1>medfed run <code>{html.escape(run_dir.name)}</code></h1>
<p id="progress">round {done} of {planned or "?"} completed; sites: {
        html.escape(", ".join(names))
    }</p>
{_live_section(live) if live is not None else ""}
{_round_table(metrics)}
{"<h2>Charts</h2>" + "".join(drawn) if drawn else "<p>No round has completed yet.</p>"}
{f"<h2>Site failures and refusals</h2><ul>{failure_items}</ul>" if failures else ""}
</body></html>
"""


def write_report(run_dir: Path) -> Path:
    """Write the static page of ``run_dir`` to ``run_dir/report.html``."""
    path = run_dir / REPORT_FILE
    path.write_text(render_run_page(run_dir), encoding="utf-8")
    return path
