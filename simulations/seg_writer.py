"""Write a label map as a DICOM SEG object referencing its source series (highdicom)."""

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

__all__ = ["write_simulated_lesion_seg"]

_ALGORITHM = hd.AlgorithmIdentificationSequence(
    name="medfed brain-lesion simulator",
    version="1",
    family=codes.cid7162.ArtificialIntelligence,
)


def write_simulated_lesion_seg(
    source_files: list[Path], mask: np.ndarray, out: Path, seed_text: str
) -> Path:
    """Write ``mask`` [slices, rows, cols] (non-zero = lesion) over ``source_files`` (same order).

    Every source image is referenced, lesion or not, so a reader can tell "no lesion here"
    from "not segmented". UIDs derive from ``seed_text``: the same seed writes the same file.
    """
    sources = [pydicom.dcmread(path) for path in source_files]
    lesion = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_ALGORITHM,
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=(mask > 0).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[lesion],
        series_instance_uid=generate_uid(entropy_srcs=[f"{seed_text}-seg-series"]),
        series_number=100,
        sop_instance_uid=generate_uid(entropy_srcs=[f"{seed_text}-seg"]),
        instance_number=1,
        manufacturer="medfed",
        manufacturer_model_name="brain-lesion simulator",
        software_versions="1",
        device_serial_number="simulated",
        omit_empty_frames=False,
    )
    seg.save_as(out)
    return out
