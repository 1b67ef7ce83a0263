"""`medfed-server`: the coordinator's command line: its commands, each imported only when called."""

from common.cli_support import command_line_app

__all__ = ["app"]

app = command_line_app(
    "medfed-server",
    "Coordinate a federation: provision sites, run the SuperLink, launch and watch jobs.",
    {
        "provision": "server.commands.provision:provision_command",
        "start": "server.commands.start:start",
        "enrol": "server.commands.enrol:enrol",
        "run": "server.commands.run:run",
        "status": "server.commands.status:status",
        "dashboard": "server.commands.dashboard:dashboard",
    },
)
