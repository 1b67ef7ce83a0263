"""Write a predicted mask as a DICOM SEG object referencing its source series (highdicom)."""

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from common.errors import MedfedError

__all__ = ["SegWriteError", "write_dicom_seg"]

#: Type 2 attributes highdicom copies from the source: present, possibly empty, in a valid
#: source image but missing from some exports. Missing ones are added empty, in memory only.
_TYPE2_COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
    "StudyDate", "StudyTime", "ReferringPhysicianName",
)  # fmt: skip
_SERIES_NUMBER = 9100
_SERIES_DESCRIPTION = "medfed prediction - not for diagnostic use"


class SegWriteError(MedfedError):
    """A DICOM SEG could not be made for a series; the reason holds no attribute value."""


def _sources(paths: Sequence[Path]) -> list[pydicom.Dataset]:
    """Source headers in slice order (no pixels), completed with empty Type 2 attributes."""
    datasets: list[pydicom.Dataset] = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    for ds in datasets:
        for keyword in _TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return datasets


def _segment_description(
    number: int, name: str, algorithm: hd.AlgorithmIdentificationSequence
) -> hd.seg.SegmentDescription:
    lesion = "lesion" in name.lower() or "tumo" in name.lower()
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=(
            codes.SCT.MorphologicallyAbnormalStructure if lesion else codes.SCT.Tissue
        ),
        segmented_property_type=codes.SCT.Lesion if lesion else codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )


def write_dicom_seg(
    source_files: Sequence[Path],
    masks: np.ndarray,
    segment_names: Sequence[str],
    out_path: Path,
    algorithm_name: str,
    algorithm_version: str,
) -> Path:
    """Write ``masks`` as a binary DICOM SEG with one segment per foreground class.

    ``masks`` [N, rows, cols] holds a class index per pixel (0 = background) at the source
    images' own size, frame ``i`` on ``source_files[i]`` (or on frame ``i`` of a single
    multi-frame file). Every source frame gets a SEG frame per segment, empty or not, so an
    empty prediction still makes a valid SEG that references the whole series.

    Raises:
        SegWriteError: The sources are not one consistent series, or highdicom refused them.
    """
    datasets = _sources(source_files)
    if len({ds.get("FrameOfReferenceUID") for ds in datasets}) > 1:
        raise SegWriteError("the source slices do not share one FrameOfReferenceUID")
    if len({(int(ds.Rows), int(ds.Columns)) for ds in datasets}) > 1:
        raise SegWriteError("the source slices differ in size")
    if len(datasets) > 1 and any(int(ds.get("NumberOfFrames") or 1) > 1 for ds in datasets):
        raise SegWriteError("a series of several multi-frame files is not supported")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm_version[:64],
    )
    descriptions = [
        _segment_description(number, name, algorithm)
        for number, name in enumerate(segment_names[1:], start=1)
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=masks.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="medfed",
            manufacturer_model_name="medfed predict",
            software_versions=algorithm_version[:64],
            device_serial_number="none",
            content_label="MEDFED_PREDICT",
            content_description=f"Automatic segmentation by {algorithm_name}"[:64],
            series_description=_SERIES_DESCRIPTION,
            omit_empty_frames=False,
        )
    except Exception as exc:  # highdicom raises many types; their messages may quote values
        raise SegWriteError(f"highdicom could not build the SEG ({type(exc).__name__})") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out_path)
    return out_path
