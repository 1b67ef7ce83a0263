"""`medfed-server provision`: CA, coordinator certificate and one startup kit per site."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from common.cli_support import configure_logging, user_errors
from common.cli_values import check_output_folder
from server.provisioning import KitPaths, load_federation, provision

__all__ = ["provision_command"]


def provision_command(
    federation: Annotated[
        Path, typer.Option(help="federation.toml: [coordinator] address, [[sites]] name.")
    ],
    out: Annotated[Path, typer.Option(help="Folder of the kits (created or extended).")],
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Write the federation's CA and kits; re-running adds new sites and keeps existing kits."""
    configure_logging(verbose)
    console = Console()
    with user_errors():
        spec = load_federation(federation)
        check_output_folder("--out", out)
        added = provision(spec, out)
    kits = KitPaths(out)
    for site in spec.sites:
        state = "new" if site in added else "kept"
        console.print(f"site {site}: {kits.site(site)} ({state})")
    console.print(f"coordinator: {kits.coordinator} (TLS for {spec.address})")
    console.print(
        f"Send each hospital its folder under {kits.root / 'sites'} over a secure channel. "
        f"Keep {kits.ca_key} offline: it is only needed to provision again."
    )
