"""Processes that never train stay free of torch: Flower starts one ClientApp per message.

Each SecAgg+ round sends a site four messages, and flwr 1.41 starts a fresh ClientApp process
for each; three only exchange keys. ``medfed-site start`` only checks the site's records and
starts the node. Measured in docs/results.md (issue 16): torch, Opacus and MONAI cost a
process about 5 s of CPU before it can answer.
"""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "opacus", "monai")


def _loaded_after(module: str) -> list[str]:
    probe = (
        f"import sys, json; import {module}; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    "module",
    # `medfed`'s module: its --version and -h answer without them (3.6 s of CPU before).
    ["client.client_app", "client.commands.start", "client.privacy_ledger", "client.predict_cli"],
)
def test_a_process_that_does_not_train_imports_no_torch(module: str) -> None:
    assert _loaded_after(module) == []


def test_the_ledger_still_composes_epsilon_with_opacus() -> None:
    from client.privacy_ledger import composed_epsilon  # noqa: PLC0415

    assert composed_epsilon([], 1e-5) == 0.0
    assert 0 < composed_epsilon([(1.0, 0.1, 100)], 1e-5) < composed_epsilon([(1.0, 0.1, 200)], 1e-5)


@pytest.mark.parametrize(
    ("program", "module"),
    [
        ("medfed-site", "client.cli"),
        ("medfed-sim", "simulations.cli"),
        ("medfed-server", "server.cli"),
    ],
)
def test_a_programs_help_lists_every_command_without_importing_them(
    program: str, module: str
) -> None:
    """The help reads each command's docstring from its source (4-5 s of CPU when imported)."""
    probe = (
        f"import sys, json\nfrom {module} import app\nsys.argv = [{program!r}, '-h']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []
    lazy = __import__(module, fromlist=["app"]).app.info.cls.lazy
    rows = [line.strip("│ ").split(" ")[0] for line in result.stdout.splitlines()]
    assert [name for name in lazy if name in rows] == list(lazy)
    words = " ".join(result.stdout.replace("│", " ").split())
    for target in lazy.values():
        module_name, function = target.split(":")
        summary = __import__(module_name, fromlist=[function]).__dict__[function].__doc__
        assert " ".join(summary.split("\n\n")[0].split()) in words, target
