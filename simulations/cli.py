"""`medfed-sim`: the researcher's command line: its commands, each imported only when called."""

from common.cli_support import command_line_app

__all__ = ["app"]

app = command_line_app(
    "medfed-sim",
    "Simulate many hospitals on one machine: federated vs pooled vs local training.",
    {
        "run": "simulations.commands.run:run",
        "generate": "simulations.commands.generate:generate",
        "report": "simulations.commands.report:report",
        "pretrain": "simulations.commands.pretrain:pretrain",
        "audit-privacy": "simulations.commands.audit_privacy:audit_privacy",
    },
)
