"""`medfed-site prepare`: preprocess a DICOM folder once into the cache that training reads."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from client.data_pipeline import run_pipeline
from client.qc_table import print_quality_report
from common.cli_support import configure_logging, user_errors
from common.data.dicom_prepare import PreprocessingConfig
from common.data.intensity import WINDOW_PRESETS
from common.data.label_manifest import read_label_manifest
from common.data.nifti_cases import is_nifti_folder
from common.data.nifti_prepare import MASK_CLASSES
from common.data.pseudonyms import SitePseudonymiser
from common.data.site_cache import KEY_FILE, write_site_cache
from common.errors import ConfigError

__all__ = ["prepare"]

_WINDOWS = ["auto", "percentile", *WINDOW_PRESETS]


def prepare(
    data: Annotated[Path, typer.Option(help="Folder of DICOM files (any depth, mixed studies).")],
    out: Annotated[Path, typer.Option(help="Cache folder to write (stays at the site).")],
    labels: Annotated[
        Path | None,
        typer.Option(
            help="DICOM: CSV with 'label' and one of file, SeriesInstanceUID, StudyInstanceUID. "
            "NIfTI (MSD or images/ + masks/): not needed, masks label the slices."
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            help="Class order, comma-separated, negative class first (e.g. no-lesion,lesion)."
        ),
    ] = None,
    window: Annotated[
        str, typer.Option(help=f"Intensity normalisation: {', '.join(_WINDOWS)}.")
    ] = "auto",
    ct_window: Annotated[
        str, typer.Option(help="Window used for CT when --window auto.")
    ] = "soft-tissue",
    spacing: Annotated[
        float | None,
        typer.Option(help="Resample to this pixel spacing (mm) before cropping/padding to --size."),
    ] = None,
    size: Annotated[int, typer.Option(help="Output image side in pixels.")] = 64,
    val_fraction: Annotated[float, typer.Option(help="Share of studies for validation.")] = 0.1,
    test_fraction: Annotated[float, typer.Option(help="Share of studies for testing.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the study-level split.")] = 0,
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Decode, window, resample and cache every labelled image, split by study."""
    configure_logging(verbose)
    console = Console(stderr=True)
    with user_errors():
        for name, value in (("--window", window), ("--ct-window", ct_window)):
            if value not in _WINDOWS:
                raise ConfigError(name, f"{value!r} is not one of {_WINDOWS}")
        config = PreprocessingConfig(
            window=window, ct_window=ct_window, target_spacing=spacing, size=size
        )
        order = tuple(c.strip() for c in classes.split(",")) if classes else None
        if labels is None and not is_nifti_folder(data):
            raise ConfigError("--labels", f"{data} is not a NIfTI folder: give a labels CSV")
        manifest = read_label_manifest(labels, order) if labels is not None else None
        pseudonymise = SitePseudonymiser.from_key_file(out / KEY_FILE)
        prepared, quality = run_pipeline(
            data, config, manifest, pseudonymise, keep_pixels=True, console=console
        )
        class_names = manifest.class_names if manifest is not None else MASK_CLASSES
        dataset = write_site_cache(
            out, prepared, class_names, quality, val_fraction, test_fraction, seed
        )
    print_quality_report(quality, Console())
    typer.echo(f"cache written to {dataset.parent} ({len(prepared.labels)} images)")
