"""`medfed-site`: hospital IT's command line: its commands, each imported only when called."""

from common.cli_support import command_line_app

__all__ = ["app"]

app = command_line_app(
    "medfed-site",
    "Run a hospital's site node: check and prepare local images (nothing leaves the site).",
    {
        "check": "client.commands.check:check",
        "prepare": "client.commands.prepare:prepare",
        "start": "client.commands.start:start",
        "privacy": "client.commands.records:privacy",
        "audit": "client.commands.records:audit",
    },
)
