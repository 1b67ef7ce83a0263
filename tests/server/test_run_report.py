"""The static run report: rounds, sites and privacy from a run folder's metrics.json."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from server.run_charts import line_chart
from server.run_report import write_report


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "job.toml").write_text("rounds = 3\n")
    sites = [
        {"round": r, "phase": phase, "node_id": n, "site": site, "num-examples": 10,
         "train-loss": 1.0 / r, "epsilon": 2.0 * r, "epsilon-site-total": 2.5 * r,
         "epsilon-budget": 9.0, "roc_auc": 0.5 + 0.1 * r, "privacy-unit": "patient"}
        for r in (1, 2) for n, site in enumerate(("hospital-a", "hospital-b"))
        for phase in ("train", "evaluate")
    ]  # fmt: skip
    metrics = {
        "global": {},
        "federated": {
            "train": {"1": {"epsilon": 2.0}, "2": {"epsilon": 4.0}},
            "evaluate": {"1": {"roc_auc": 0.6, "loss": 0.7}, "2": {"roc_auc": 0.7, "loss": 0.6}},
        },
        "sites": sites,
        "failures": [{"round": 2, "phase": "train", "node_id": -1,
                      "reason": "site hospital-c refuses this round: <budget>"}],
    }  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_the_report_shows_progress_rounds_sites_privacy_and_refusals(tmp_path: Path) -> None:
    page = write_report(_run_folder(tmp_path)).read_text()
    assert "round 2 of 3 completed" in page
    assert "hospital-a" in page and "hospital-b" in page
    assert page.count("<svg") == 4
    assert "hospital-a budget 9" in page  # the site's limit drawn beside its spending
    assert "0.700" in page  # round 2's ROC-AUC in the rounds table
    assert "epsilon per patient (max over sites)" in page  # the unit the sites reported
    assert page.count("epsilon per patient") >= 2  # the privacy chart's axis too
    assert "&lt;budget&gt;" in page  # reasons are escaped, never injected
    assert "<meta http-equiv" not in page  # a static report does not reload itself


def test_a_run_without_metrics_yet_renders_an_empty_page(tmp_path: Path) -> None:
    run = tmp_path / "starting"
    run.mkdir()
    page = write_report(run).read_text()
    assert "round 0 of ? completed" in page and "No round has completed yet." in page
    assert "<svg" not in page and "Charts" not in page  # no empty charts


def _y_ticks(svg: str) -> list[float]:
    return [float(t) for t in re.findall(r'text-anchor="end" font-size="11">([-\d.]+)<', svg)]


def test_spent_epsilon_keeps_a_readable_scale_under_a_far_budget(tmp_path: Path) -> None:
    """A budget of 1050 for 0.99 spent: the axis follows the spending, the budget is named."""
    run = _run_folder(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    for entry in metrics["sites"]:
        entry.update({"epsilon-budget": 1050.0, "epsilon-site-total": 0.5 * entry["round"] - 0.01})
    (run / "metrics.json").write_text(json.dumps(metrics))
    page = write_report(run).read_text()
    privacy = page[page.index('aria-label="Privacy spent per site"') :]
    privacy = privacy[: privacy.index("</svg>")]
    assert max(_y_ticks(privacy)) < 2  # 0.99 spent is not a flat line at zero
    assert "hospital-a budget 1050 (above the scale)" in privacy
    rows = [float(y) for y in re.findall(r'<text x="\d+" y="([\d.]+)" fill=', privacy)]
    assert len(rows) == 4 and len(set(rows)) == 4  # 2 sites + 2 budgets, no row on another

    # a budget near the spending is drawn to scale, dashed
    chart = line_chart("p", {"a": [(1, 2.0), (2, 4.0)]}, "epsilon", {"a budget": 9.0})
    assert "stroke-dasharray" in chart and max(_y_ticks(chart)) >= 9.0


def test_a_run_without_dp_has_no_privacy_chart_and_failures_read_as_sentences(
    tmp_path: Path,
) -> None:
    run = _run_folder(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    for entry in metrics["sites"]:
        for key in ("epsilon", "epsilon-site-total", "epsilon-budget"):
            entry.pop(key)
    metrics["failures"] = [
        {"round": 2, "phase": "evaluate", "node_id": 7, "site": "hospital-b",
         "reason": "Node Unavailable: the SuperNode stopped answering"},
    ]  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    page = write_report(run).read_text()
    assert "Privacy spent" not in page and "no data yet" not in page
    assert page.count("<svg") == 3
    assert (
        "<li>Round 2, evaluation: hospital-b took no part (Node Unavailable: the SuperNode "
        "stopped answering).</li>" in page
    )


def test_the_report_in_headless_chromium(tmp_path: Path) -> None:
    """Debian's chromium renders the page offline: the DOM has every chart and site."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    page = write_report(_run_folder(tmp_path))
    browser = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]  # fmt: skip
    dom = subprocess.run(
        [*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count("<svg") == 4 and "hospital-b" in dom and "hospital-a budget 9" in dom
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [*browser, f"--screenshot={screenshot}", "--window-size=1200,1400", page.as_uri()],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000


def test_a_simulation_report_compares_baselines_and_shows_dice_per_class(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["global"] = {
        str(r): {"dice": 0.2 * r, "dice_vessel": 0.25 * r, "dice_optic-disc": 0.15 * r}
        for r in (0, 1, 2)
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    page = write_report(run).read_text()
    assert "federated vs baselines" not in page  # no baselines.json: no empty chart
    assert 'aria-label="Test Dice per class"' in page
    dice = page[page.index('aria-label="Test Dice per class"') :]
    dice = dice[: dice.index("</svg>")]
    assert ">vessel<" in dice and ">optic-disc<" in dice

    rows = [{"round": r, "dice": 0.21 * r} for r in (1, 2)]
    local = {"0": [{"round": r, "dice": 0.1 * r} for r in (1, 2)], "1": rows}
    baselines = {"pooled": {"rounds": rows}, "local": {"sites": local}}
    (run / "baselines.json").write_text(json.dumps(baselines))
    page = write_report(run).read_text()
    chart = page[page.index('aria-label="Test dice: federated vs baselines"') :]
    chart = chart[: chart.index("</svg>")]
    for name in (">federated<", ">pooled<", ">site-0 alone<", ">site-1 alone<"):
        assert name in chart
    assert chart.count("<polyline") == 4
