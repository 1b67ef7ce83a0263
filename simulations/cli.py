"""`medfed-sim`: the researcher's command line; this module only registers the commands."""

from common.cli_support import command_line_app
from simulations.commands.audit_privacy import audit_privacy
from simulations.commands.generate import generate
from simulations.commands.pretrain import pretrain
from simulations.commands.report import report
from simulations.commands.run import run

__all__ = ["app"]

app = command_line_app(
    "medfed-sim",
    "Simulate many hospitals on one machine: federated vs pooled vs local training.",
)
app.command("run")(run)
app.command("generate")(generate)
app.command("report")(report)
app.command("pretrain")(pretrain)
app.command("audit-privacy")(audit_privacy)
