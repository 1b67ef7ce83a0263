"""Walk a folder of DICOM files (any depth, mixed studies) and group them into ordered series.

Each file is read once. Without ``read_image`` only the few header elements below are parsed
(grouping and ordering); with it the whole file is read and its pixels decoded in the same
pass, so ``prepare`` never opens a file twice.
"""

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from common.data.dicom_pixels import decode_error_reason
from common.data.dicom_values import floats, strings, text

if TYPE_CHECKING:
    from common.data.dicom_image import DecodedImage

__all__ = [
    "NON_IMAGE_MODALITIES",
    "DicomScan",
    "FileProblem",
    "ImageReader",
    "SeriesFiles",
    "TRUNCATED_PIXELS",
    "SliceHeader",
    "scan_dicom_folder",
]

logger = logging.getLogger(__name__)

#: Modalities whose pixel data are not images to train on (masks, dose grids, reports).
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTDOSE", "RTSTRUCT", "RTPLAN", "SR", "PR", "KO", "REG"})

# Only these header values are used; they stay at the site (see docs/privacy.md). As tags, not
# keywords: dcmread converts each keyword of specific_tags on every call (~0.5 us each).
_HEADER_TAGS = [
    Tag(keyword)
    for keyword in (
        "SeriesInstanceUID", "StudyInstanceUID", "Modality", "ImagePositionPatient",
        "ImageOrientationPatient", "InstanceNumber", "PixelSpacing", "Rows", "SOPInstanceUID",
    )
]  # fmt: skip
_SERIES_UID, _STUDY_UID, _MODALITY, _SOP_UID = 0x0020000E, 0x0020000D, 0x00080060, 0x00080018
_POSITION, _ORIENTATION, _INSTANCE, _SPACING = 0x00200032, 0x00200037, 0x00200013, 0x00280030
_ROWS = 0x00280010

#: Decodes a fully read image file, given its in-plane spacing (see common.data.dicom_image).
ImageReader = Callable[[pydicom.Dataset, tuple[float, float] | None], "DecodedImage"]


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
    #: The decoded image when the folder was scanned with a ``read_image``; else None.
    image: "DecodedImage | None" = field(default=None, compare=False, repr=False)


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


def _files_under(root: Path) -> list[Path]:
    """Every file under ``root``, sorted (os.walk: no stat call per file, unlike Path.rglob)."""
    return sorted(Path(folder, name) for folder, _, names in os.walk(root) for name in names)


def _normal(orientation: tuple[float, ...] | None) -> np.ndarray | None:
    if orientation is None or len(orientation) != 6:
        return None
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    return np.cross(row, col)


#: Reason for an image file whose pixel data the file ends inside of.
TRUNCATED_PIXELS = "pixel data not decodable: the file ends inside its pixel data (truncated)"


def _read(path: Path, whole: bool) -> tuple[pydicom.Dataset | None, str | None]:
    try:
        if not whole:
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS), None
        ds = pydicom.dcmread(path)  # specific_tags measured no faster: values convert lazily
        # pydicom (3.0) returns an empty dataset, with a warning only, when a file ends inside
        # encapsulated pixel data: its header alone tells whether it was an image.
        if len(ds) == 0:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            if _ROWS in header:
                return None, TRUNCATED_PIXELS
        return ds, None
    except InvalidDicomError:
        return None, "not a DICOM file (no DICM preamble or file meta)"
    except Exception as exc:  # pydicom raises many types on damaged files
        return None, f"unreadable DICOM header ({type(exc).__name__})"


def _slice_header(path: Path, ds: pydicom.Dataset, read_image: ImageReader | None) -> SliceHeader:
    """Header facts of an image file, and its decoded image when ``read_image`` is given."""
    instance = strings(ds, _INSTANCE)
    try:
        instance_number = int(instance[0]) if instance else None
    except ValueError:
        instance_number = None
    spacing = floats(ds, _SPACING, 2)
    return SliceHeader(
        path=path,
        position=floats(ds, _POSITION, 3),  # type: ignore[arg-type]
        orientation=floats(ds, _ORIENTATION, 6),
        instance_number=instance_number,
        pixel_spacing=spacing,  # type: ignore[arg-type]
        sop_instance_uid=text(ds, _SOP_UID),
        image=read_image(ds, spacing) if read_image is not None else None,  # type: ignore[arg-type]
    )


def _not_an_image(ds: pydicom.Dataset, modality: str, series_uid: str) -> str | None:
    """Why a readable DICOM file is no image to train on, or None when it is one."""
    if _ROWS not in ds:  # a tag test: the keyword lookup converts the value (~3 us)
        return "DICOM file without an image (no Rows element)"
    if not series_uid:
        return "image without a SeriesInstanceUID"
    if modality in NON_IMAGE_MODALITIES:
        return f"modality {modality} is not an image series for training"
    return None


def _order(series: SeriesFiles) -> None:
    """Sort by position along the slice normal; by InstanceNumber where positions are missing."""
    normal = _normal(series.slices[0].orientation)
    if normal is not None and all(s.position is not None for s in series.slices):
        series.slices.sort(key=lambda s: float(np.dot(s.position, normal)))  # type: ignore[arg-type]
    else:
        series.slices.sort(key=lambda s: (s.instance_number is None, s.instance_number or 0))


def scan_dicom_folder(
    root: Path,
    on_file: Callable[[int, int], None] | None = None,
    read_image: ImageReader | None = None,
) -> DicomScan:
    """Read every file under ``root`` once and group the image files into ordered series.

    Files that are not DICOM, have a damaged header, hold no image (reports, plans) or, with
    ``read_image``, pixel data that cannot be decoded (truncated, unsupported compression) are
    listed in ``problems`` with the reason; DICOM SEG objects go to ``segmentations``; nothing
    is dropped silently. ``read_image`` decodes each image file while it is in memory and its
    result is kept as ``SliceHeader.image``. ``on_file(done, total)`` reports progress.
    """
    root = Path(root)
    files = _files_under(root)
    series: dict[str, SeriesFiles] = {}
    problems: list[FileProblem] = []
    segmentations: list[Path] = []
    for done, path in enumerate(files, start=1):
        if on_file is not None:
            on_file(done, len(files))
        ds, reason = _read(path, whole=read_image is not None)
        if ds is None:
            problems.append(FileProblem(path.relative_to(root), reason or "unreadable"))
            continue
        modality = text(ds, _MODALITY)
        if modality == "SEG":
            segmentations.append(path)
            continue
        uid = text(ds, _SERIES_UID)
        reason = _not_an_image(ds, modality, uid)
        if reason is None:
            try:
                header = _slice_header(path, ds, read_image)
            except Exception as exc:  # pydicom and its plugins raise many types
                reason = decode_error_reason(exc)
        if reason is not None:
            problems.append(FileProblem(path.relative_to(root), reason))
            continue
        entry = series.get(uid)
        if entry is None:
            study = text(ds, _STUDY_UID) or uid
            entry = series[uid] = SeriesFiles(uid, study, modality or "OT")
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
