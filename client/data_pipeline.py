"""Scan, decode and measure a site's DICOM folder, with progress bars (check and prepare)."""

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.data.dicom_prepare import PreparedImages, PreprocessingConfig, prepare_series
from common.data.dicom_scan import scan_dicom_folder
from common.data.label_manifest import LabelManifest
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import QualityReport
from common.errors import DataFormatError

__all__ = ["run_pipeline"]


def run_pipeline(
    data: Path,
    config: PreprocessingConfig,
    manifest: LabelManifest | None,
    pseudonymise: SitePseudonymiser,
    keep_pixels: bool,
    console: Console,
) -> tuple[PreparedImages, QualityReport]:
    """Scan ``data`` then decode every series; progress is shown on ``console``."""
    if not data.is_dir():
        raise DataFormatError(data, "not a folder")
    report = QualityReport()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        scanning = progress.add_task("scan headers", total=None)
        scan = scan_dicom_folder(
            data, on_file=lambda done, total: progress.update(scanning, completed=done, total=total)
        )
        decoding = progress.add_task("decode series", total=len(scan.series))
        prepared = prepare_series(
            scan,
            config,
            manifest,
            pseudonymise,
            report,
            keep_pixels=keep_pixels,
            on_series=lambda done, total: progress.update(decoding, completed=done),
        )
        progress.update(decoding, completed=len(scan.series))
    if not scan.series:
        raise DataFormatError(data, f"no DICOM image series among {scan.files_seen} files")
    return prepared, report
