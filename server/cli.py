"""`medfed-server`: the coordinator's command line; this module only registers the commands."""

from common.cli_support import command_line_app
from server.commands.dashboard import dashboard
from server.commands.enrol import enrol
from server.commands.provision import provision_command
from server.commands.run import run
from server.commands.start import start
from server.commands.status import status

__all__ = ["app"]

app = command_line_app(
    "medfed-server",
    "Coordinate a federation: provision sites, run the SuperLink, launch and watch jobs.",
)
app.command("provision")(provision_command)
app.command("start")(start)
app.command("enrol")(enrol)
app.command("run")(run)
app.command("status")(status)
app.command("dashboard")(dashboard)
