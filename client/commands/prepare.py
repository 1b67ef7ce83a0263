"""`medfed-site prepare`: preprocess a DICOM folder once into the cache that training reads."""

from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from client.data_pipeline import run_pipeline
from client.qc_table import print_quality_report
from client.registration_options import contract_channels, registration_options
from common.cli_support import MaxPixelMib, add_debug_log, configure_logging, user_errors
from common.cli_values import check_fraction, check_output_folder, check_positive
from common.config import PREPARED_TASKS
from common.data.arrays import mask_classes
from common.data.colour import CHANNEL_RULES
from common.data.dicom_pixels import DEFAULT_MAX_PIXEL_MIB
from common.data.dicom_prepare import PreprocessingConfig, check_preprocessing_options
from common.data.intensity import WINDOW_CHOICES
from common.data.label_manifest import read_label_manifest
from common.data.nifti_cases import is_nifti_folder
from common.data.picture_cases import is_picture_folder
from common.data.preprocessing_contract import MISSING_SEQUENCE_CHOICES
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import pseudonymous_path
from common.data.registration import TRANSFORM_KINDS
from common.data.site_cache import KEY_FILE, write_site_cache
from common.errors import ConfigError, DataFormatError

__all__ = ["DEBUG_LOG", "prepare"]

#: Decoder messages and tracebacks of a prepare run, in its cache folder (stays at the site).
DEBUG_LOG = "debug.log"
#: Smallest --size: below it no network of medfed has a feature map left.
_MIN_SIZE = 8


def prepare(
    data: Annotated[
        Path,
        typer.Option(
            help="Folder of DICOM files (any depth, mixed studies), NIfTI cases, or 2D images "
            "(images/ + masks/, or dataset.json)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Cache folder to write (stays at the site).")],
    labels: Annotated[
        Path | None,
        typer.Option(
            help="DICOM: CSV with 'label' and one of file, SeriesInstanceUID, StudyInstanceUID. "
            "NIfTI (MSD or images/ + masks/) or --task segmentation: not needed, masks label "
            "the slices."
        ),
    ] = None,
    task: Annotated[
        str,
        typer.Option(
            help="classification (labels CSV) or segmentation (masks from the DICOM SEG objects "
            "among the files, or NIfTI masks) kept beside each image."
        ),
    ] = "classification",
    segments: Annotated[
        str | None,
        typer.Option(
            help="Segmentation: mask classes in order, background first (e.g. "
            "background,vessel); every site must use the same. [default: the DICOM SEG's "
            "segment labels (sorted) or dataset.json's labels; else background,foreground]"
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            help="Class order, comma-separated, negative class first (e.g. no-lesion,lesion)."
        ),
    ] = None,
    window: Annotated[
        str, typer.Option(help=f"Intensity normalisation: {', '.join(WINDOW_CHOICES)}.")
    ] = "auto",
    ct_window: Annotated[
        str, typer.Option(help="Window used for CT when --window auto.")
    ] = "soft-tissue",
    spacing: Annotated[
        float | None,
        typer.Option(help="Resample to this pixel spacing (mm) before cropping/padding to --size."),
    ] = None,
    size: Annotated[int, typer.Option(help="Output image side in pixels (voxels, --dims 3).")] = 64,
    channels: Annotated[
        str,
        typer.Option(
            help=f"Colour rule ({', '.join(CHANNEL_RULES)}): grey averages R, G and B; rgb keeps "
            "3 channels; r, g or b keeps one. Other than grey: 2D image folders only."
        ),
    ] = "grey",
    dims: Annotated[
        int,
        typer.Option(
            help="2: each slice is an image; 3: each series (or NIfTI case) is one volume of "
            "--size^3 voxels at --spacing mm (segmentation only, for --task segmentation-3d jobs)."
        ),
    ] = 2,
    val_fraction: Annotated[float, typer.Option(help="Share of studies for validation.")] = 0.1,
    test_fraction: Annotated[float, typer.Option(help="Share of studies for testing.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the study-level split.")] = 0,
    register: Annotated[
        str,
        typer.Option(
            help="Register each series in 3D before slicing: none, atlas (MNI152 T1, bundled) "
            "or reference (--reference)."
        ),
    ] = "none",
    reference: Annotated[
        Path | None,
        typer.Option(help="--register reference: the volume to register to (NIfTI, NRRD, MHA)."),
    ] = None,
    transform: Annotated[
        str, typer.Option(help=f"Registration transform: {', '.join(TRANSFORM_KINDS)}.")
    ] = "affine",
    sequences: Annotated[
        str | None,
        typer.Option(
            help="Multi-sequence studies: NAME=PATTERN,... (e.g. T1=*t1*,T2=*t2*,FLAIR=*flair*) "
            "matched on SeriesDescription/ProtocolName; one channel each, co-registered to "
            "the first."
        ),
    ] = None,
    missing_sequence: Annotated[
        str,
        typer.Option(
            help="A study lacking one of the --sequences: skip (left out, named in the QC "
            "report) or zeros (that channel filled with zeros, noted in the QC report and the "
            "preprocessing contract, and one mask channel per sequence added after the images: "
            f"1 where the study has it). One of: {', '.join(MISSING_SEQUENCE_CHOICES)}."
        ),
    ] = "skip",
    min_label_area: Annotated[
        float,
        typer.Option(
            help="Classification of --register/--sequences studies without --labels: the DICOM "
            "SEG masks label each slice on the output grid, positive from this many mm^2 of "
            "foreground, negative without any; a slice with less but some (a sliver) is left "
            "out as unlabelled. 0: any foreground voxel."
        ),
    ] = 0.0,
    max_pixel_mib: MaxPixelMib = DEFAULT_MAX_PIXEL_MIB,
    verbose: Annotated[bool, typer.Option(help="Debug logging.")] = False,
) -> None:
    """Decode, window, resample and cache every labelled image, split by study.

    The QC tables are printed even when no cache can be written (exit 3); decoder messages and
    tracebacks go to OUT/debug.log.
    """
    configure_logging(verbose)
    console = Console(stderr=True)
    with user_errors():
        check_preprocessing_options(window, ct_window, spacing)
        check_positive("--max-pixel-mib", max_pixel_mib)
        if size < _MIN_SIZE:
            raise ConfigError("--size", f"{size} must be a whole number of pixels >= {_MIN_SIZE}")
        check_fraction("--val-fraction", val_fraction)
        check_fraction("--test-fraction", test_fraction)
        if val_fraction + test_fraction >= 1:
            raise ConfigError(
                "--val-fraction/--test-fraction",
                f"{val_fraction} + {test_fraction} leaves no study for training",
            )
        check_output_folder("--out", out)
        if not data.is_dir():
            raise DataFormatError(data, "no such folder (--data)")
        if channels not in CHANNEL_RULES:
            raise ConfigError("--channels", f"{channels!r} is not one of {list(CHANNEL_RULES)}")
        two_d = is_picture_folder(data)
        if channels != "grey" and not two_d:
            raise ConfigError(
                "--channels",
                f"{channels}: only a 2D image folder (images/ + masks/ or dataset.json of "
                f"pictures or 2D NIfTI) is read in colour; {data} is read as grey",
            )
        config = PreprocessingConfig(
            window=window, ct_window=ct_window, target_spacing=spacing, size=size,
            channels=channels, dims=dims,
        )  # fmt: skip
        if task not in PREPARED_TASKS:
            raise ConfigError("--task", f"{task!r} is not one of {list(PREPARED_TASKS)}")
        segmentation = task == "segmentation"
        if dims not in (2, 3) or (dims == 3 and not segmentation):
            raise ConfigError("--dims", f"{dims}: give 2, or 3 with --task segmentation")
        if dims == 3 and (two_d or register != "none" or sequences):
            raise ConfigError(
                "--dims", "3 reads DICOM series or NIfTI volumes, without --register/--sequences"
            )
        order = tuple(c.strip() for c in classes.split(",")) if classes else None
        aligned = register != "none" or sequences is not None
        if labels is None and not segmentation and not (aligned or two_d or is_nifti_folder(data)):
            raise ConfigError(
                "--labels", f"{data} is not a NIfTI or 2D image folder: give a labels CSV, or "
                "--register/--sequences to label the slices by their DICOM SEG masks",
            )  # fmt: skip
        mask_labels = aligned and labels is None and not segmentation
        if min_label_area < 0 or (min_label_area and not mask_labels):
            raise ConfigError(
                "--min-label-area", f"{min_label_area}: a number of mm^2 >= 0, for a "
                "classification of --register/--sequences studies without --labels",
            )  # fmt: skip
        if segmentation and labels is not None:
            raise ConfigError("--labels", "segmentation takes its labels from the masks")
        manifest = read_label_manifest(labels, order) if labels is not None else None
        segment_names = tuple(s.strip() for s in segments.split(",")) if segments else None
        if segment_names is not None and len(segment_names) < 2:
            raise ConfigError("--segments", "name the background and at least one class")
        registration = registration_options(
            register, reference, transform, sequences, missing_sequence
        )
        if registration is not None and manifest is not None and manifest.keyed_by_file:
            raise ConfigError(
                "--labels", "labels per file do not survive 3D registration: label series or "
                "studies, or leave --labels out (the DICOM SEG masks label the slices)",
            )  # fmt: skip
        pseudonymise = SitePseudonymiser.from_key_file(out / KEY_FILE)
        add_debug_log(out / DEBUG_LOG)
        prepared, quality = run_pipeline(
            data, config, manifest, pseudonymise, keep_pixels=True, console=console,
            segmentation=segmentation, segment_names=segment_names, max_pixel_mib=max_pixel_mib,
            registration=registration, label_min_area=min_label_area if mask_labels else None,
        )  # fmt: skip
        quality.path_names = partial(pseudonymous_path, pseudonymise=pseudonymise)
        class_names = (
            manifest.class_names if manifest is not None else mask_classes(prepared.segment_names)
        )
        try:
            if not quality.images_per_modality:
                raise DataFormatError(
                    data, f"no usable image among {quality.files_seen} files (reasons listed above)"
                )
            channel_names, registered, missing, presence = contract_channels(registration)
            contract = config.contract(
                task, class_names, None if mask_labels else prepared.segment_names,
                channel_names or prepared.channel_names, registered, missing, presence,
            )  # fmt: skip
            dataset = write_site_cache(
                out, prepared, class_names, quality, val_fraction, test_fraction, seed, contract
            )
        finally:  # the tables say why, also when no cache can be written
            print_quality_report(quality, Console())
    typer.echo(f"cache written to {dataset.parent} ({len(prepared.labels)} images)")
