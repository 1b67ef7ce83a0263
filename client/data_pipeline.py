"""Read, decode and measure a site's DICOM or NIfTI folder, with progress bars."""

from functools import partial
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.data.arrays import DEFAULT_SEGMENT_NAMES
from common.data.dicom_pixels import DEFAULT_MAX_PIXEL_MIB
from common.data.dicom_prepare import (
    PreparedImages,
    PreprocessingConfig,
    prepare_series,
    read_dicom_folder,
)
from common.data.dicom_scan import scan_dicom_folder
from common.data.dicom_seg import read_segmentations
from common.data.label_manifest import LabelManifest
from common.data.nifti_cases import (
    channel_names_of,
    find_nifti_cases,
    is_nifti_folder,
    segment_names_of,
)
from common.data.nifti_prepare import prepare_nifti_cases
from common.data.picture_cases import find_picture_cases, is_picture_folder
from common.data.picture_prepare import prepare_picture_cases
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import QualityReport
from common.data.registered_prepare import RegistrationOptions, prepare_registered
from common.data.series_volume import VolumeReader
from common.data.volume_prepare import prepare_nifti_volumes, stack_series_volumes
from common.errors import DataFormatError

__all__ = ["run_pipeline"]

_COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
)


def run_pipeline(
    data: Path,
    config: PreprocessingConfig,
    manifest: LabelManifest | None,
    pseudonymise: SitePseudonymiser,
    keep_pixels: bool,
    console: Console,
    segmentation: bool = False,
    segment_names: tuple[str, ...] | None = None,
    max_pixel_mib: float = DEFAULT_MAX_PIXEL_MIB,
    registration: RegistrationOptions | None = None,
    label_min_area: float | None = None,
) -> tuple[PreparedImages, QualityReport]:
    """Read and decode every file of ``data`` once, then resample each series; with progress.

    A 2D folder (``images/`` + ``masks/`` or an MSD-like ``dataset.json`` of pictures or 2D
    NIfTI) is read as 2D images labelled by their masks or by a labels CSV keyed by file; a
    folder with ``dataset.json`` (Medical Segmentation Decathlon) or ``images/`` of NIfTI
    files as NIfTI cases whose masks label the slices; anything else as DICOM. With
    ``segmentation`` DICOM images are labelled by the DICOM SEG objects found among the files
    (classes ``segment_names``, background first; by default the SEG labels found, sorted).
    A folder without any usable image gives an empty result whose report says why per file.
    A DICOM file declaring more than ``max_pixel_mib`` MiB of pixels is refused unread.
    With ``registration`` DICOM series are read whole and aligned in 3D before slicing
    (common.data.registered_prepare); NIfTI folders are refused then. With it and
    ``label_min_area`` (a classification without labels CSV) the DICOM SEG masks label the
    slices and are not kept.
    With ``config.dims`` 3 each series or NIfTI case becomes one volume
    (common.data.volume_prepare).
    """
    if not data.is_dir():
        raise DataFormatError(data, "not a folder")
    report = QualityReport()
    if is_picture_folder(data):
        pictures = find_picture_cases(data)
        with Progress(*_COLUMNS, console=console) as progress:
            reading = progress.add_task("read 2D images", total=len(pictures))
            prepared = prepare_picture_cases(
                pictures, config, pseudonymise, report, manifest=manifest, keep_pixels=keep_pixels,
                on_case=lambda done, total: progress.update(reading, completed=done),
                segment_names=segment_names or segment_names_of(data) or DEFAULT_SEGMENT_NAMES,
            )  # fmt: skip
        return prepared, report
    if is_nifti_folder(data):
        if registration is not None:
            raise DataFormatError(data, "--register/--sequences read DICOM series, not NIfTI")
        cases = find_nifti_cases(data)
        with Progress(*_COLUMNS, console=console) as progress:
            reading = progress.add_task("read NIfTI cases", total=len(cases))
            names = segment_names or segment_names_of(data) or DEFAULT_SEGMENT_NAMES
            if config.dims == 3:
                prepared = prepare_nifti_volumes(
                    cases, config, pseudonymise, report,
                    on_case=lambda done, total: progress.update(reading, completed=done),
                    segment_names=names,
                )  # fmt: skip
                return prepared, report
            prepared = prepare_nifti_cases(
                cases, config, pseudonymise, report, keep_pixels=keep_pixels,
                on_case=lambda done, total: progress.update(reading, completed=done),
                segment_names=names,
                channel_names=partial(channel_names_of, data),
            )  # fmt: skip
        return prepared, report
    with Progress(*_COLUMNS, console=console) as progress:
        reading = progress.add_task("read and decode files", total=None)
        on_file = lambda done, total: progress.update(reading, completed=done, total=total)  # noqa: E731
        if registration is not None:
            scan = scan_dicom_folder(data, on_file, VolumeReader(), max_pixel_mib)
        else:
            scan = read_dicom_folder(data, config, keep_pixels, on_file, max_pixel_mib)
        masks = None
        if segmentation or label_min_area is not None:
            if not scan.segmentations:
                raise DataFormatError(
                    data, f"no DICOM SEG object among {scan.files_seen} files to take masks from"
                )
            masks = read_segmentations(scan.segmentations, data, report, segment_names)
        if registration is not None:
            aligning = progress.add_task("register and resample studies", total=None)
            prepared = prepare_registered(
                scan, config, registration, manifest, pseudonymise, report, masks,
                on_study=lambda done, total: progress.update(aligning, completed=done, total=total),
                label_min_area=label_min_area,
            )  # fmt: skip
            return prepared, report
        decoding = progress.add_task("normalise and resample series", total=len(scan.series))
        prepared = prepare_series(
            scan,
            config,
            manifest,
            pseudonymise,
            report,
            keep_pixels=keep_pixels,
            on_series=lambda done, total: progress.update(decoding, completed=done),
            segmentations=masks,
        )
        progress.update(decoding, completed=len(scan.series))
    if config.dims == 3 and keep_pixels:
        prepared = stack_series_volumes(scan, prepared, config, pseudonymise, report)
    return prepared, report
