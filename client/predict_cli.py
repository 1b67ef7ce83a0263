"""`medfed`: use a model trained with medfed at this site (`medfed predict`)."""

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from common.cli_support import add_debug_log, command_line_app, configure_logging, user_errors
from common.cli_values import check_output_folder
from common.data.intensity import WINDOW_CHOICES
from common.errors import DataFormatError

__all__ = ["app"]


app = command_line_app(
    "medfed",
    "Use a model trained with medfed on this site's images (nothing leaves the site).",
)


@app.command("predict")
def predict(
    model: Annotated[Path, typer.Option(help="Checkpoint written by medfed training (.pt).")],
    input_path: Annotated[
        Path,
        typer.Option(
            "--input",
            help="A DICOM, NIfTI (.nii/.nii.gz) or picture (PNG, JPEG, TIFF, BMP, GIF) file, or "
            "a folder of them (any depth).",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for the predictions (stays at the site).")],
    window: Annotated[
        str | None,
        typer.Option(
            help=f"Intensity normalisation: {', '.join(WINDOW_CHOICES)}. Read from the model's "
            "preprocessing contract; given, it must agree. Only for a model without one. "
            "[default: auto]"
        ),
    ] = None,
    ct_window: Annotated[
        str | None,
        typer.Option(
            help="Window used for CT when --window auto: from the model's contract, as --window. "
            "[default: soft-tissue]"
        ),
    ] = None,
    spacing: Annotated[
        float | None,
        typer.Option(
            help="Pixel spacing (mm) images are resampled to: from the model's contract, as "
            "--window (default: resize without physical scaling)."
        ),
    ] = None,
    masks: Annotated[
        Path | None,
        typer.Option(
            help="Segmentation: folder of the site's own masks, named like the 2D inputs, to "
            "score the predictions against at the source's and the model's resolution."
        ),
    ] = None,
    sequences: Annotated[
        str | None,
        typer.Option(
            help="A model trained on stacked sequences (prepare --sequences): the same rule, "
            "NAME=PATTERN,... with the model's channel names in order; each DICOM study is "
            "grouped, co-registered and registered as prepare did."
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="A model whose data were registered to a reference volume (prepare --register "
            "reference): that volume (its hash is in the model's contract)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    saliency: Annotated[bool, typer.Option(help="Classification: write Grad-CAM overlays.")] = True,
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Predict on new images with a trained model; write masks, scores, overlays, summary.

    Images are preprocessed as `medfed-site prepare` prepared the model's training data: the
    checkpoint carries that preprocessing contract, so no option needs repeating.

    Skipped files are listed (grouped by reason) and in summary.json; decoder messages and
    tracebacks go to OUT/debug.log. Exits 3 when no input can be read.
    """
    # Imported here so that `medfed --help` answers without loading torch and MONAI.
    from client.inference.predict import PredictOptions, run_predict
    from client.inference.replay import PreprocessingOverrides
    from client.qc_table import print_skipped
    from common.data.dicom_prepare import check_preprocessing_options

    configure_logging(verbose)
    # highdicom reports each module it copies at INFO: noise at a site.
    logging.getLogger("highdicom").setLevel(logging.DEBUG if verbose else logging.WARNING)
    console = Console(stderr=True)
    with user_errors():
        check_preprocessing_options(window or "auto", ct_window or "auto", spacing)
        check_output_folder("--out", out)
        if not model.is_file():
            raise DataFormatError(model, "no such checkpoint file (--model)")
        if not input_path.exists():
            raise DataFormatError(input_path, "no such file or folder (--input)")
        if masks is not None and not masks.is_dir():
            raise DataFormatError(masks, "no such folder (--masks)")
        add_debug_log(out / "debug.log")
        options = PredictOptions(
            model=model,
            input=input_path,
            out=out,
            preprocessing=PreprocessingOverrides(window, ct_window, spacing),
            batch_size=batch_size,
            saliency=saliency,
            masks=masks,
            sequences=sequences,
            reference=reference,
        )
        summary = run_predict(options, console)
    skipped = [{"path": s["input"], "reason": s["reason"]} for s in summary["skipped"]]
    print_skipped(skipped, Console())
    if "decision" in summary:
        typer.echo(f"decision: {summary['decision']['text']}")
    typer.echo(
        f"predicted {len(summary['inputs'])} inputs, {len(skipped)} files skipped; "
        f"see {out / 'summary.json'}"
    )
