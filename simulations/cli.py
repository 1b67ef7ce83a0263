"""`medfed-sim`: the researcher's command line; this module only registers the commands."""

import typer

from simulations.commands.generate import generate
from simulations.commands.run import run

__all__ = ["app"]

app = typer.Typer(
    name="medfed-sim",
    help="Simulate many hospitals on one machine: federated vs pooled vs local training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("run")(run)
app.command("generate")(generate)
