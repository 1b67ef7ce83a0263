"""Read one input and preprocess it exactly as ``medfed-site prepare`` prepared training data."""

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from client.inference.geometry import dicom_affine
from client.inference.sources import Skipped, Source
from common.data.dicom_pixels import decode_frames
from common.data.dicom_prepare import PreprocessingConfig
from common.data.dicom_scan import SeriesFiles, SliceHeader
from common.data.image_folder_reader import picture_in_unit_range, read_picture
from common.data.intensity import normalise_intensity
from common.data.nifti_cases import NiftiCase, read_nifti_case
from common.data.resampling import resample_images
from common.errors import DataFormatError

__all__ = ["PreparedInput", "read_input"]

_NIFTI_MODALITY = "NIfTI"  # what medfed-site prepare calls NIfTI volumes (window 'auto')


@dataclass
class PreparedInput:
    """One input's images at their own size and at the model's size, with their provenance."""

    source: Source
    #: [N, rows, cols] in [0, 1] after intensity normalisation, at the source size.
    display: np.ndarray
    #: [N, 1, size, size] float32, what the network sees.
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


def _short_reason(exc: Exception) -> str:
    """Exception type and first line, cut short (decoder messages hold sizes, not tag values)."""
    text = str(exc).split("\n")[0].strip()[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _single_file_series(path: Path) -> SeriesFiles:
    """A series of one DICOM file given directly (no folder scan)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise DataFormatError(path, "not a DICOM file (no DICM preamble or file meta)") from None
    except Exception as exc:  # pydicom raises many types on damaged or foreign files
        raise DataFormatError(path, f"not a readable DICOM file ({type(exc).__name__})") from None
    if str(ds.get("Modality", "")) == "SEG" or not ds.get("Rows"):
        raise DataFormatError(path, "DICOM file without an image to predict on")
    header = SliceHeader(
        path=path,
        position=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        instance_number=None,
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
    )
    return SeriesFiles(
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        modality=str(ds.get("Modality", "OT")),
        slices=[header],
    )


def _read_dicom(source: Source, root: Path, config: PreprocessingConfig) -> PreparedInput:
    series = source.series or _single_file_series(source.files[0])
    frames: list[np.ndarray] = []
    used: list[SliceHeader] = []
    prepared = PreparedInput(source, np.zeros(0), np.zeros(0), spacing=series.pixel_spacing)
    for header in series.slices:
        relative = header.path.relative_to(root).as_posix()
        try:
            decoded = decode_frames(header.path)
        except Exception as exc:  # pydicom and its plugins raise many types
            prepared.skipped.append(
                Skipped(relative, f"pixel data not decodable ({_short_reason(exc)})")
            )
            continue
        if frames and decoded.shape[1:] != frames[0].shape:
            prepared.skipped.append(Skipped(relative, "image size differs from its series"))
            continue
        frames.extend(decoded)
        used.append(header)
        prepared.dicom_files.append(header.path)
        prepared.image_files += [relative] * len(decoded)
        prepared.image_frames += list(range(len(decoded)))
    if not frames:
        reasons = "; ".join(s.reason for s in prepared.skipped[:2])
        raise DataFormatError(root / source.name, f"no decodable DICOM image ({reasons})")
    single_frames = len(frames) == len(used)
    prepared.affine = dicom_affine(used) if single_frames else None
    prepared.display = normalise_intensity(np.stack(frames), config.window_for(series.modality))
    prepared.batch = resample_images(
        prepared.display, series.pixel_spacing, config.target_spacing, config.size
    )[:, None]
    return prepared


def _read_nifti(source: Source, root: Path, config: PreprocessingConfig) -> PreparedInput:
    path = source.files[0]
    case = NiftiCase(source.name, path, None)
    try:
        volume, _, spacing = read_nifti_case(case)
    except DataFormatError:
        raise
    except Exception as exc:  # nibabel and MONAI raise many types on damaged files
        raise DataFormatError(path, f"not readable as NIfTI ({type(exc).__name__})") from None
    display = normalise_intensity(volume, config.window_for(_NIFTI_MODALITY))
    batch = resample_images(display, spacing, config.target_spacing, config.size)[:, None]
    return PreparedInput(
        source,
        display,
        batch,
        image_files=[source.name] * len(volume),
        image_frames=list(range(len(volume))),
        spacing=spacing,
        affine=np.asarray(nib.load(path).affine, dtype=np.float64),
    )


def _picture_pixels(path: Path) -> tuple[np.ndarray, bool]:
    """Grayscale pixels as float32 and whether they are 16-bit (else 8-bit)."""
    try:
        return read_picture(path)
    except Exception as exc:  # Pillow raises many types on damaged files
        raise DataFormatError(path, f"not a readable picture ({_short_reason(exc)})") from None


def _read_picture(source: Source, root: Path, config: PreprocessingConfig) -> PreparedInput:
    pixels, sixteen_bit = _picture_pixels(source.files[0])
    if config.window == "auto":  # as the image-folder reader prepares pictures for training
        display = pixels / (65535.0 if sixteen_bit else 255.0)
        model_size = picture_in_unit_range(pixels, sixteen_bit, config.size)[None]
    else:
        display = normalise_intensity(pixels, config.window)
        model_size = resample_images(display[None], None, None, config.size)
    return PreparedInput(
        source,
        display[None].astype(np.float32),
        model_size[:, None].astype(np.float32),
        image_files=[source.name],
        image_frames=[0],
    )


def read_input(source: Source, root: Path, config: PreprocessingConfig) -> PreparedInput:
    """Decode ``source`` and normalise and resample its images as ``prepare`` does.

    DICOM and NIfTI use ``config.window_for`` their modality (CT: the CT window, others
    percentile scaling over the whole series or volume) and ``resample_images`` with the
    series' pixel spacing. Pictures under window 'auto' are scaled by their bit depth, as the
    image-folder reader does for training. A DICOM slice that cannot be decoded is listed in
    ``skipped`` and the rest of its series is used.

    Raises:
        DataFormatError: Nothing of the input can be read; the message names the file.
    """
    readers = {"dicom": _read_dicom, "nifti": _read_nifti, "picture": _read_picture}
    return readers[source.kind](source, root, config)
