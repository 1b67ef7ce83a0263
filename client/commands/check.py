"""`medfed-site check`: read every image of a DICOM folder and report its quality."""

import json
import secrets
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from client.data_pipeline import run_pipeline
from client.qc_table import print_quality_report
from common.cli_support import (
    FormatOption,
    MaxPixelMib,
    OutputFormat,
    add_debug_log,
    configure_logging,
    emit_json,
    fail_with_report,
    user_errors,
)
from common.cli_values import check_output_file, check_positive
from common.data.dicom_pixels import DEFAULT_MAX_PIXEL_MIB
from common.data.dicom_prepare import PreprocessingConfig
from common.data.label_manifest import read_label_manifest
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import pseudonymous_path
from common.errors import ConfigError, DataFormatError

__all__ = ["check"]


def check(
    data: Annotated[
        Path,
        typer.Option(
            help="Folder of DICOM files (any depth, mixed studies), NIfTI cases, or 2D images "
            "(images/ + masks/, or dataset.json)."
        ),
    ],
    labels: Annotated[
        Path | None, typer.Option(help="Labels CSV, to count missing labels.")
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="Site key file, to name series by their cache pseudonyms.")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            help="Also write the report as JSON here (file paths pseudonymised), and the "
            "debug log (decoder messages, tracebacks) beside it as REPORT.debug.log."
        ),
    ] = None,
    max_pixel_mib: MaxPixelMib = DEFAULT_MAX_PIXEL_MIB,
    output: FormatOption = OutputFormat.TEXT,
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Scan, decode and measure every image; list each skipped file with the reason.

    Exits 3 (after the tables and the report) when no file holds a usable image. With
    --format json stdout gets the report as --report writes it (with an 'error' on exit 3).
    """
    configure_logging(verbose)
    console = Console(stderr=True)
    with user_errors(output):
        check_positive("--max-pixel-mib", max_pixel_mib)
        if report is not None:
            check_output_file("--report", report)
            add_debug_log(report.with_name(report.name + ".debug.log"))
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
        quality.path_names = partial(pseudonymous_path, pseudonymise=pseudonymise)
        payload = quality.as_dict()
        if report is not None:
            report.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        unusable = (
            DataFormatError(
                data, f"no usable image among {quality.files_seen} files (reasons listed above)"
            )
            if not quality.images_per_modality
            else None
        )
        if output is OutputFormat.JSON:
            if unusable is not None:
                fail_with_report(payload, unusable.exit_code, str(unusable))
            emit_json(payload)
            return
        print_quality_report(quality, Console())
        if report is not None:
            typer.echo(f"report written to {report}")
        if unusable is not None:
            raise unusable
