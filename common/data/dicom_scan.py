"""Walk a folder of DICOM files (any depth, mixed studies) and group them into ordered series."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

__all__ = [
    "NON_IMAGE_MODALITIES",
    "DicomScan",
    "FileProblem",
    "SeriesFiles",
    "SliceHeader",
    "scan_dicom_folder",
]

logger = logging.getLogger(__name__)

#: Modalities whose pixel data are not images to train on (masks, dose grids, reports).
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTDOSE", "RTSTRUCT", "RTPLAN", "SR", "PR", "KO", "REG"})

# Only these header values are read; they stay at the site (see docs/privacy.md).
_HEADER_TAGS = [
    "SeriesInstanceUID", "StudyInstanceUID", "Modality", "ImagePositionPatient",
    "ImageOrientationPatient", "InstanceNumber", "PixelSpacing", "Rows", "SOPInstanceUID",
]  # fmt: skip


@dataclass(frozen=True)
class FileProblem:
    """A file that was skipped, and why (no DICOM value is ever part of the reason)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class SliceHeader:
    """What ordering and resampling need from one file's header."""

    path: Path
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    instance_number: int | None
    pixel_spacing: tuple[float, float] | None
    #: Kept in memory to match DICOM SEG frames to their source image; never written out.
    sop_instance_uid: str = ""


@dataclass
class SeriesFiles:
    """The files of one series, ordered along the slice normal."""

    series_uid: str
    study_uid: str
    modality: str
    slices: list[SliceHeader] = field(default_factory=list)

    @property
    def pixel_spacing(self) -> tuple[float, float] | None:
        """In-plane spacing (row, column) in mm, from the first slice that states it."""
        return next((s.pixel_spacing for s in self.slices if s.pixel_spacing), None)

    def slice_gaps(self) -> np.ndarray:
        """Distances between consecutive slice positions along the normal (mm)."""
        positions = [s.position for s in self.slices if s.position is not None]
        normal = _normal(self.slices[0].orientation) if self.slices else None
        if len(positions) < 2 or normal is None:
            return np.zeros(0)
        along = np.sort(np.asarray(positions) @ normal)
        return np.diff(along)


@dataclass
class DicomScan:
    """Series found under a folder, and every file that could not be used."""

    root: Path
    series: dict[str, SeriesFiles]
    problems: list[FileProblem]
    files_seen: int
    #: DICOM SEG objects (Modality SEG): segmentation masks of the image series.
    segmentations: list[Path] = field(default_factory=list)


def _normal(orientation: tuple[float, ...] | None) -> np.ndarray | None:
    if orientation is None or len(orientation) != 6:
        return None
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    return np.cross(row, col)


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _read_header(path: Path) -> tuple[pydicom.Dataset | None, str | None]:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS), None
    except InvalidDicomError:
        return None, "not a DICOM file (no DICM preamble or file meta)"
    except Exception as exc:  # pydicom raises many types on damaged files
        return None, f"unreadable DICOM header ({type(exc).__name__})"


def _slice_header(path: Path, ds: pydicom.Dataset) -> SliceHeader:
    instance = ds.get("InstanceNumber")
    try:
        instance_number = int(instance) if instance not in (None, "") else None
    except (TypeError, ValueError):
        instance_number = None
    spacing = _floats(ds.get("PixelSpacing"), 2)
    return SliceHeader(
        path=path,
        position=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        instance_number=instance_number,
        pixel_spacing=spacing,  # type: ignore[arg-type]
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
    )


def _order(series: SeriesFiles) -> None:
    """Sort by position along the slice normal; by InstanceNumber where positions are missing."""
    normal = _normal(series.slices[0].orientation)
    if normal is not None and all(s.position is not None for s in series.slices):
        series.slices.sort(key=lambda s: float(np.dot(s.position, normal)))  # type: ignore[arg-type]
    else:
        series.slices.sort(key=lambda s: (s.instance_number is None, s.instance_number or 0))


def scan_dicom_folder(root: Path, on_file: Callable[[int, int], None] | None = None) -> DicomScan:
    """Read the header of every file under ``root`` and group image files into series.

    Files that are not DICOM, have a damaged header, or hold no image (reports, plans) are
    listed in ``problems`` with the reason; nothing is dropped silently. ``on_file(done, total)``
    reports progress.
    """
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    series: dict[str, SeriesFiles] = {}
    problems: list[FileProblem] = []
    segmentations: list[Path] = []
    for done, path in enumerate(files, start=1):
        if on_file is not None:
            on_file(done, len(files))
        ds, reason = _read_header(path)
        relative = path.relative_to(root)
        if ds is None:
            problems.append(FileProblem(relative, reason or "unreadable"))
        elif str(ds.get("Modality", "")) == "SEG":
            segmentations.append(path)
        elif not ds.get("Rows"):
            problems.append(FileProblem(relative, "DICOM file without an image (no Rows element)"))
        elif not ds.get("SeriesInstanceUID"):
            problems.append(FileProblem(relative, "image without a SeriesInstanceUID"))
        elif str(ds.get("Modality", "")) in NON_IMAGE_MODALITIES:
            problems.append(
                FileProblem(relative, f"modality {ds.Modality} is not an image series for training")
            )
        else:
            try:
                header = _slice_header(path, ds)
            except (TypeError, ValueError) as exc:
                problems.append(
                    FileProblem(
                        relative, f"invalid value in an image header element ({type(exc).__name__})"
                    )
                )
                continue
            uid = str(ds.SeriesInstanceUID)
            entry = series.setdefault(
                uid,
                SeriesFiles(
                    series_uid=uid,
                    study_uid=str(ds.get("StudyInstanceUID", uid)),
                    modality=str(ds.get("Modality", "OT")),
                ),
            )
            entry.slices.append(header)
    for entry in series.values():
        _order(entry)
    logger.info("scanned %d files: %d series, %d skipped", len(files), len(series), len(problems))
    return DicomScan(
        root=root,
        series=series,
        problems=problems,
        files_seen=len(files),
        segmentations=segmentations,
    )
