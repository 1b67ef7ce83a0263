"""`medfed-site`: hospital IT's command line; this module only registers the commands."""

import typer

from client.commands.check import check
from client.commands.prepare import prepare

__all__ = ["app"]

app = typer.Typer(
    name="medfed-site",
    help="Run a hospital's site node: check and prepare local images (nothing leaves the site).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("check")(check)
app.command("prepare")(prepare)
