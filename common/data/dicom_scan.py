"""Walk a folder of DICOM files (any depth, mixed studies) and group them into ordered series.

Each file is read once. Without ``read_image`` only the few header elements below are parsed
(grouping and ordering); with it the whole file is read and its pixels decoded in the same
pass, so ``prepare`` never opens a file twice.
"""

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from common.data.dicom_pixels import DEFAULT_MAX_PIXEL_MIB, pixel_size_problem
from common.data.dicom_problems import (
    TRUNCATED_PIXELS,
    decode_error_reason,
    error_text,
    jpeg2000_problem,
    missing_image_reason,
)
from common.data.dicom_values import floats, strings, text
from common.data.site_files import list_site_files, os_error_reason

if TYPE_CHECKING:
    from common.data.dicom_image import ReducedImage

__all__ = [
    "NON_IMAGE_MODALITIES",
    "DicomScan",
    "FileProblem",
    "ImageReader",
    "SeriesFiles",
    "TRUNCATED_PIXELS",
    "inflated_size_problem",
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
        "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "SOPClassUID",
        "PatientID", "SeriesDescription", "ProtocolName",
    )
]  # fmt: skip
_SERIES_UID, _STUDY_UID, _MODALITY, _SOP_UID = 0x0020000E, 0x0020000D, 0x00080060, 0x00080018
_POSITION, _ORIENTATION, _INSTANCE, _SPACING = 0x00200032, 0x00200037, 0x00200013, 0x00280030
_ROWS, _SOP_CLASS, _PATIENT_ID = 0x00280010, 0x00080016, 0x00100020
_DESCRIPTION, _PROTOCOL = 0x0008103E, 0x00181030

#: Decodes a fully read image file, given its in-plane spacing (see common.data.dicom_image).
ImageReader = Callable[[pydicom.Dataset, tuple[float, float] | None], "ReducedImage"]


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
    image: "ReducedImage | None" = field(default=None, compare=False, repr=False)


@dataclass
class SeriesFiles:
    """The files of one series, ordered along the slice normal."""

    series_uid: str
    study_uid: str
    modality: str
    slices: list[SliceHeader] = field(default_factory=list)
    #: Read once with the header, kept in memory to group images by patient; never written.
    patient_id: str = ""
    #: SeriesDescription and ProtocolName, to tell a study's sequences apart; never written.
    description: str = ""
    protocol: str = ""

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


_DEFLATED = pydicom.uid.DeflatedExplicitVRLittleEndian
_DEFLATED_BYTES = _DEFLATED.encode()
#: Header bytes allowed on top of the pixel cap when a deflated data set is inflated.
_HEADER_SLACK = 16 << 20


def inflated_size_problem(path: Path, max_pixel_mib: float) -> str | None:
    """Why a deflated file must not be read (it inflates beyond the pixel cap), or None.

    pydicom inflates a deflated data set whole, pixel data included, before parsing its header:
    a 1 MB file can declare gigabytes. The stream is inflated here in bounded pieces and only
    counted, so this check holds at most a few MiB whatever the file declares.
    """
    with path.open("rb") as handle:
        return _inflated_size_problem(handle, max_pixel_mib)


def _inflated_size_problem(handle: BinaryIO, max_pixel_mib: float) -> str | None:
    """:func:`inflated_size_problem` of an open file; leaves it at an unspecified position."""
    head = handle.read(1024)
    if _DEFLATED_BYTES not in head:  # a cheap test, on bytes read anyway: the usual case
        return None
    handle.seek(0)
    pydicom.filereader.read_preamble(handle, False)
    meta = pydicom.filereader._read_file_meta_info(handle)  # noqa: SLF001 - no public one for a handle
    if meta.get("TransferSyntaxUID") != _DEFLATED:
        return None
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    limit, total = int(max_pixel_mib * (1 << 20)) + _HEADER_SLACK, 0
    try:
        while chunk := handle.read(1 << 20):
            while chunk:
                total += len(inflater.decompress(chunk, 1 << 22))
                if total > limit:
                    return (
                        "refused: its deflated data set inflates to more than "
                        f"{max_pixel_mib:g} MiB of pixels (the --max-pixel-mib cap)"
                    )
                chunk = inflater.unconsumed_tail
    except zlib.error:
        return "damaged: its deflated data set is corrupted (zlib cannot inflate it)"
    return None


def _not_dicom_reason(path: Path) -> str:
    """Why pydicom found no DICOM file: a preamble cut or broken, or another kind of file."""
    with path.open("rb") as handle:
        head = handle.read(132)
    if head and not head.strip(b"\x00"):
        return "damaged: the file ends inside its 128-byte DICOM preamble (truncated)"
    if len(head) == 132 and not head[:128].strip(b"\x00"):
        return "damaged: a DICOM preamble without its DICM marker (corrupted)"
    return "not a DICOM file (no DICM preamble or file meta)"


def _read(
    path: Path, size: int, whole: bool, max_pixel_mib: float
) -> tuple[pydicom.Dataset | None, str | None]:
    if size == 0:
        return None, "damaged: empty file (0 bytes)"
    if whole and size > max_pixel_mib * (1 << 20) + _HEADER_SLACK:  # pixel data is read whole
        return None, (
            f"refused: file of {size / (1 << 20):.0f} MiB is larger than the "
            f"{max_pixel_mib:g} MiB pixel cap (--max-pixel-mib)"
        )
    try:
        with path.open("rb") as handle:  # opened once: the deflate test peeks at its start
            problem = _inflated_size_problem(handle, max_pixel_mib)
            if problem is not None:
                return None, problem
            handle.seek(0)
            if not whole:
                header = pydicom.dcmread(
                    handle, stop_before_pixels=True, specific_tags=_HEADER_TAGS
                )
                return header, None
            ds = pydicom.dcmread(handle)  # specific_tags measured no faster: values convert lazily
        # pydicom (3.0) returns an empty dataset, with a warning only, when a file ends inside
        # encapsulated pixel data: its header alone tells whether it was an image.
        if len(ds) == 0:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            if _ROWS in header:
                return None, TRUNCATED_PIXELS
        return ds, None
    except InvalidDicomError:
        return None, _not_dicom_reason(path)
    except OSError as exc:
        return None, f"file not readable ({os_error_reason(exc)})"
    except Exception as exc:  # pydicom raises many types on damaged files
        logger.debug("reading %s failed", path, exc_info=True)
        return None, f"damaged: DICOM header not readable ({error_text(exc)})"


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
        position=floats(ds, _POSITION, 3),
        orientation=floats(ds, _ORIENTATION, 6),
        instance_number=instance_number,
        pixel_spacing=spacing,
        sop_instance_uid=text(ds, _SOP_UID),
        image=read_image(ds, spacing) if read_image is not None else None,
    )


def _not_an_image(ds: pydicom.Dataset, modality: str, series_uid: str) -> str | None:
    """Why a readable DICOM file is no image to train on, or None when it is one."""
    if _ROWS not in ds:  # a tag test: the keyword lookup converts the value (~3 us)
        return missing_image_reason(ds)
    if not series_uid:
        return "image without a SeriesInstanceUID"
    if modality in NON_IMAGE_MODALITIES:
        return f"modality {modality} is not an image series for training"
    return None


def _compressed(ds: pydicom.Dataset) -> bool:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return bool(syntax is not None and syntax.is_compressed)


def _order(series: SeriesFiles) -> None:
    """Sort by position along the slice normal; by InstanceNumber where positions are missing."""
    normal = _normal(series.slices[0].orientation)
    located = [(s, s.position) for s in series.slices if s.position is not None]
    if normal is not None and len(located) == len(series.slices):
        located.sort(key=lambda pair: float(np.dot(pair[1], normal)))
        series.slices[:] = [s for s, _ in located]
    else:
        series.slices.sort(key=lambda s: (s.instance_number is None, s.instance_number or 0))


def scan_dicom_folder(
    root: Path,
    on_file: Callable[[int, int], None] | None = None,
    read_image: ImageReader | None = None,
    max_pixel_mib: float = DEFAULT_MAX_PIXEL_MIB,
) -> DicomScan:
    """Read every file under ``root`` once and group the image files into ordered series.

    Files that are not DICOM, have a damaged header, hold no image (reports, plans) or, with
    ``read_image``, pixel data that cannot be decoded (truncated, unsupported compression) are
    listed in ``problems`` with the reason; DICOM SEG objects go to ``segmentations``; nothing
    is dropped silently. ``read_image`` decodes each image file while it is in memory and its
    result is kept as ``SliceHeader.image``. ``on_file(done, total)`` reports progress.

    Only regular files are opened (see common.data.site_files); an image whose declared pixel
    size (rows x columns x frames x samples x bits) exceeds ``max_pixel_mib`` MiB is refused
    before its pixels are read or decoded.
    """
    root = Path(root)
    listed = list_site_files(root)
    files = listed.files
    series: dict[str, SeriesFiles] = {}
    problems = [FileProblem(path, reason) for path, reason in listed.problems]
    segmentations: list[Path] = []
    for done, (path, size) in enumerate(files, start=1):
        if on_file is not None:
            on_file(done, len(files))
        ds, reason = _read(path, size, read_image is not None, max_pixel_mib)
        if ds is None:
            problems.append(FileProblem(path.relative_to(root), reason or "unreadable"))
            continue
        modality = text(ds, _MODALITY)
        if modality == "SEG":
            segmentations.append(path)
            continue
        uid = text(ds, _SERIES_UID)
        reason = _not_an_image(ds, modality, uid) or pixel_size_problem(ds, max_pixel_mib)
        if reason is None and read_image is not None:
            reason = jpeg2000_problem(ds)
        if reason is None:
            try:
                header = _slice_header(path, ds, read_image)
            except Exception as exc:  # pydicom and its plugins raise many types
                logger.debug("decoding %s failed", path, exc_info=True)
                reason = decode_error_reason(exc, compressed=_compressed(ds))
        if reason is not None:
            problems.append(FileProblem(path.relative_to(root), reason))
            continue
        entry = series.get(uid)
        if entry is None:
            study = text(ds, _STUDY_UID) or uid
            entry = series[uid] = SeriesFiles(uid, study, modality or "OT")
            entry.patient_id = text(ds, _PATIENT_ID).strip()
            entry.description = text(ds, _DESCRIPTION).strip()
            entry.protocol = text(ds, _PROTOCOL).strip()
        entry.slices.append(header)
    for entry in series.values():
        _order(entry)
    problems.sort(key=lambda problem: problem.path)
    logger.debug("scanned %d files: %d series, %d skipped", len(files), len(series), len(problems))
    return DicomScan(
        root=root,
        series=series,
        problems=problems,
        files_seen=len(files) + len(listed.problems),
        segmentations=segmentations,
    )
