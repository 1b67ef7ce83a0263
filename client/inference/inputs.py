"""Read one input and preprocess it exactly as ``medfed-site prepare`` prepared training data."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import nibabel as nib
import numpy as np
import pydicom
from nibabel.spatialimages import SpatialImage
from pydicom.errors import InvalidDicomError

from client.inference.geometry import dicom_affine
from client.inference.sources import Skipped, Source
from common.data.dicom_image import DecodedImage, ImageReducer
from common.data.dicom_pixels import DEFAULT_MAX_PIXEL_MIB, decode_stored, pixel_size_problem
from common.data.dicom_prepare import PreprocessingConfig, normalise_and_resample
from common.data.dicom_problems import decode_error_reason, error_text, missing_image_reason
from common.data.dicom_scan import SeriesFiles, SliceHeader, inflated_size_problem
from common.data.intensity import scale_to_unit
from common.data.nifti_cases import NiftiCase, read_nifti_case
from common.data.nifti_prepare import normalise_and_resample_volume
from common.data.picture_cases import is_2d_nifti, read_picture_file
from common.data.picture_prepare import preprocess_picture
from common.errors import DataFormatError

__all__ = ["NoDecodableImage", "PreparedInput", "read_input"]

logger = logging.getLogger(__name__)


@dataclass
class PreparedInput:
    """One input's images at their own size and at the model's size, with their provenance."""

    source: Source
    #: [N, rows, cols] in [0, 1] after intensity normalisation, at the source size.
    display: np.ndarray
    #: [N, C, size, size] float32, what the network sees.
    batch: np.ndarray
    #: Per image: its file relative to ``--input`` and the frame within that file.
    image_files: list[str] = field(default_factory=list)
    image_frames: list[int] = field(default_factory=list)
    #: DICOM: the files used, in slice order (one per SEG source image).
    dicom_files: list[Path] = field(default_factory=list)
    #: In-plane spacing (row, column) in mm, when known.
    spacing: tuple[float, float] | None = None
    #: NIfTI-style affine of the stack indexed (column, row, slice), when known.
    affine: np.ndarray | None = None
    #: Files of this input that were left out (e.g. one undecodable slice of a series).
    skipped: list[Skipped] = field(default_factory=list)
    #: Model-size masks [N, size, size] -> the source's [slices, rows, cols]; None: the
    #: inverse of prepare's 2D resampling (client.inference.geometry.to_source_size).
    to_source: Callable[[np.ndarray], np.ndarray] | None = None


class NoDecodableImage(DataFormatError):
    """No file of a DICOM input could be decoded; ``skipped`` names each file and its reason."""

    def __init__(self, path: Path, skipped: list[Skipped]) -> None:
        reasons = "; ".join(sorted({s.reason for s in skipped}))
        super().__init__(path, f"no decodable DICOM image ({reasons})")
        self.skipped = skipped


@overload
def _floats(value: Any, count: Literal[2]) -> tuple[float, float] | None: ...
@overload
def _floats(value: Any, count: Literal[3]) -> tuple[float, float, float] | None: ...
@overload
def _floats(value: Any, count: int) -> tuple[float, ...] | None: ...
def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    """``count`` numbers from a pydicom element value (untyped: a MultiValue, a number...)."""
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _single_file_series(path: Path) -> SeriesFiles:
    """A series of one DICOM file given directly (no folder scan)."""
    try:
        problem = inflated_size_problem(path, DEFAULT_MAX_PIXEL_MIB)
        if problem is not None:
            raise DataFormatError(path, problem)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise DataFormatError(path, "not a DICOM file (no DICM preamble or file meta)") from None
    except (DataFormatError, OSError):
        raise
    except Exception as exc:  # pydicom raises many types on damaged or foreign files
        reason = f"damaged: DICOM header not readable ({error_text(exc)})"
        raise DataFormatError(path, reason) from None
    if str(ds.get("Modality", "")) == "SEG":
        raise DataFormatError(
            path, "not an image: DICOM SEG object (a mask, nothing to predict on)"
        )
    if "Rows" not in ds:
        raise DataFormatError(path, missing_image_reason(ds))
    problem = pixel_size_problem(ds, DEFAULT_MAX_PIXEL_MIB)
    if problem is not None:
        raise DataFormatError(path, problem)
    header = SliceHeader(
        path=path,
        position=_floats(ds.get("ImagePositionPatient"), 3),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        instance_number=None,
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
    )
    return SeriesFiles(
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        modality=str(ds.get("Modality", "OT")),
        slices=[header],
    )


def _read_dicom(source: Source, root: Path, config: PreprocessingConfig) -> PreparedInput:
    """A series through prepare's own path (common.data.dicom_prepare).

    The resampling taps of each file, the series' window or percentiles over those taps, then
    the weighted sum. The full-resolution frames are kept too, scaled by the same bounds, for
    the overlays.
    """
    series = source.series or _single_file_series(source.files[0])
    reducer = ImageReducer(config.target_spacing, config.size)
    images: list[DecodedImage] = []
    units: list[np.ndarray] = []
    used: list[SliceHeader] = []
    prepared = PreparedInput(source, np.zeros(0), np.zeros(0), spacing=series.pixel_spacing)
    for header in series.slices:
        relative = header.path.relative_to(root).as_posix()
        try:
            stored = decode_stored(pydicom.dcmread(header.path))
        except Exception as exc:  # pydicom and its plugins raise many types
            logger.debug("decoding %s failed", relative, exc_info=True)
            prepared.skipped.append(Skipped(relative, decode_error_reason(exc)))
            continue
        count, *shape = stored.values.shape
        if images and tuple(shape) != images[0].shape:
            prepared.skipped.append(Skipped(relative, "image size differs from its series"))
            continue
        reduced = reducer.reduce(stored, header.pixel_spacing)
        assert isinstance(reduced, DecodedImage)  # predict's reducer keeps the pixels
        images.append(reduced)
        units.append(stored.units())
        used.append(header)
        prepared.dicom_files.append(header.path)
        prepared.image_files += [relative] * count
        prepared.image_frames += list(range(count))
    if not images:
        raise NoDecodableImage(root / source.name, prepared.skipped)
    single_frames = sum(i.frames for i in images) == len(used)
    prepared.affine = dicom_affine(used) if single_frames else None
    batch, bounds = normalise_and_resample(images, config.window_for(series.modality))
    prepared.batch = np.stack(batch)[:, None]
    prepared.display = scale_to_unit(np.concatenate(units), *bounds)
    return prepared


def _read_nifti(source: Source, root: Path, config: PreprocessingConfig) -> PreparedInput:
    path = source.files[0]
    if is_2d_nifti(path):  # one 2D image: prepare's 2D path, with the NIfTI's geometry
        prepared = _read_picture(source, root, config)
        image = nib.load(path)
        if isinstance(image, SpatialImage):
            prepared.affine = np.asarray(image.affine, dtype=np.float64)
        return prepared
    case = NiftiCase(source.name, path, None)
    try:
        volume, _, spacing = read_nifti_case(case)
    except DataFormatError:
        raise
    except Exception as exc:  # nibabel and MONAI raise many types on damaged files
        raise DataFormatError(path, f"not readable as NIfTI ({error_text(exc)})") from None
    # each channel (MR sequence) scaled on its own, as prepare does (common.data.nifti_prepare)
    scaled = [normalise_and_resample_volume(c, spacing, config) for c in volume]
    display, batch = scaled[0][0], np.stack([b for _, b in scaled], axis=1)
    volume = volume[0]
    image = nib.load(path)
    if not isinstance(image, SpatialImage):  # nibabel also loads formats without an affine
        raise DataFormatError(path, "not a NIfTI image (no affine)")
    return PreparedInput(
        source,
        display,
        batch,
        image_files=[source.name] * len(volume),
        image_frames=list(range(len(volume))),
        spacing=spacing,
        affine=np.asarray(image.affine, dtype=np.float64),
    )


def _read_picture(source: Source, root: Path, config: PreprocessingConfig) -> PreparedInput:
    """A picture or 2D NIfTI through prepare's own 2D path (common.data.picture_prepare)."""
    path = source.files[0]
    try:
        picture = read_picture_file(path)
    except DataFormatError:
        raise
    except Exception as exc:  # Pillow and nibabel raise many types on damaged files
        raise DataFormatError(path, f"damaged: image not readable ({error_text(exc)})") from None
    display, model_size = preprocess_picture(picture, config)
    return PreparedInput(
        source,
        display.mean(axis=0, keepdims=True),  # overlays are drawn on grey
        model_size[None],
        image_files=[source.name],
        image_frames=[0],
        spacing=picture.spacing,
    )


def read_input(source: Source, root: Path, config: PreprocessingConfig) -> PreparedInput:
    """Decode ``source`` and normalise and resample its images as ``prepare`` does.

    DICOM and NIfTI go through prepare's own functions (``config.window_for`` their modality;
    for DICOM percentiles over the series' resampling taps, for NIfTI over the volume), so
    a training series gives the network what its cache holds. Pictures and 2D NIfTI go through
    prepare's 2D path (common.data.picture_prepare), with the model's colour rule. A DICOM
    slice that cannot be decoded is listed in ``skipped`` and the rest of its series is used.

    Raises:
        DataFormatError: Nothing of the input can be read; the message names the file.
    """
    two_d = source.kind == "picture" or (source.kind == "nifti" and is_2d_nifti(source.files[0]))
    if config.channels != "grey" and not two_d:
        raise DataFormatError(
            root / source.name,
            f"the model sees {config.channels} images; only pictures and 2D NIfTI are read in "
            "colour (DICOM and NIfTI volumes as grey)",
        )
    readers = {"dicom": _read_dicom, "nifti": _read_nifti, "picture": _read_picture}
    return readers[source.kind](source, root, config)
