"""`medfed`: use a model trained with medfed at this site (`medfed predict`)."""

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from common.cli_support import command_line_app, configure_logging, user_errors
from common.data.dicom_prepare import WINDOW_CHOICES, check_preprocessing_options

__all__ = ["app"]


app = command_line_app(
    "medfed",
    "Use a model trained with medfed on this site's images (nothing leaves the site).",
)


@app.callback()
def main() -> None:
    """Use a model trained with medfed on this site's images (nothing leaves the site)."""


@app.command("predict")
def predict(
    model: Annotated[Path, typer.Option(help="Checkpoint written by medfed training (.pt).")],
    input_path: Annotated[
        Path,
        typer.Option(
            "--input",
            help="A DICOM, NIfTI (.nii/.nii.gz) or PNG/JPEG file, or a folder of them (any depth).",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for the predictions (stays at the site).")],
    window: Annotated[
        str,
        typer.Option(
            help=f"Intensity normalisation: {', '.join(WINDOW_CHOICES)}. Must match what "
            "`medfed-site prepare` used for the training data."
        ),
    ] = "auto",
    ct_window: Annotated[
        str, typer.Option(help="Window used for CT when --window auto (as in prepare).")
    ] = "soft-tissue",
    spacing: Annotated[
        float | None,
        typer.Option(
            help="Pixel spacing (mm) images are resampled to, as `prepare --spacing` "
            "(default: resize without physical scaling)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    saliency: Annotated[bool, typer.Option(help="Classification: write Grad-CAM overlays.")] = True,
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Predict on new images with a trained model; write masks, scores, overlays, summary."""
    # Imported here so that `medfed --help` answers without loading torch and MONAI.
    from client.inference.predict import PredictOptions, run_predict

    configure_logging(verbose)
    # highdicom reports each module it copies at INFO: noise at a site.
    logging.getLogger("highdicom").setLevel(logging.DEBUG if verbose else logging.WARNING)
    console = Console(stderr=True)
    with user_errors():
        check_preprocessing_options(window, ct_window, spacing)
        options = PredictOptions(
            model=model,
            input=input_path,
            out=out,
            window=window,
            ct_window=ct_window,
            spacing=spacing,
            batch_size=batch_size,
            saliency=saliency,
        )
        summary = run_predict(options, console)
    skipped = len(summary["skipped"])
    typer.echo(
        f"predicted {len(summary['inputs'])} inputs ({skipped} files skipped); "
        f"see {out / 'summary.json'}"
    )
