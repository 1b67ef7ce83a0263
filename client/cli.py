"""`medfed-site`: hospital IT's command line; this module only registers the commands."""

from client.commands.check import check
from client.commands.prepare import prepare
from client.commands.records import audit, privacy
from client.commands.start import start
from common.cli_support import command_line_app

__all__ = ["app"]

app = command_line_app(
    "medfed-site",
    "Run a hospital's site node: check and prepare local images (nothing leaves the site).",
)
app.command("check")(check)
app.command("prepare")(prepare)
app.command("start")(start)
app.command("privacy")(privacy)
app.command("audit")(audit)
