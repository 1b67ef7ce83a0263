"""`medfed-site check`: read every image of a DICOM folder and report its quality."""

import json
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from client.data_pipeline import run_pipeline
from client.qc_table import print_quality_report
from common.cli_support import MaxPixelMib, configure_logging, user_errors
from common.cli_values import check_positive
from common.data.dicom_pixels import DEFAULT_MAX_PIXEL_MIB
from common.data.dicom_prepare import PreprocessingConfig
from common.data.label_manifest import read_label_manifest
from common.data.pseudonyms import SitePseudonymiser
from common.errors import ConfigError

__all__ = ["check"]


def check(
    data: Annotated[Path, typer.Option(help="Folder of DICOM files (any depth, mixed studies).")],
    labels: Annotated[
        Path | None, typer.Option(help="Labels CSV, to count missing labels.")
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="Site key file, to name series by their cache pseudonyms.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Also write the report as JSON here.")] = None,
    max_pixel_mib: MaxPixelMib = DEFAULT_MAX_PIXEL_MIB,
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Scan, decode and measure every image; list each skipped file with the reason."""
    configure_logging(verbose)
    console = Console(stderr=True)
    with user_errors():
        check_positive("--max-pixel-mib", max_pixel_mib)
        manifest = read_label_manifest(labels) if labels is not None else None
        if key is not None:
            if not key.is_file():  # check writes nothing: it must not create a site key
                raise ConfigError(
                    "--key", f"{key} is not a site key file (medfed-site prepare writes one)"
                )
            pseudonymise = SitePseudonymiser.from_key_file(key)
        else:  # a throw-away key: the check names series, but nothing links them later
            pseudonymise = SitePseudonymiser(secrets.token_bytes(32))
        _, quality = run_pipeline(
            data, PreprocessingConfig(), manifest, pseudonymise, keep_pixels=False,
            console=console, max_pixel_mib=max_pixel_mib,
        )  # fmt: skip
    print_quality_report(quality, Console())
    if report is not None:
        report.write_text(json.dumps(quality.as_dict(), indent=2), encoding="utf-8")
        typer.echo(f"report written to {report}")
