"""Read DICOM SEG objects (highdicom) into one label map per source image."""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np

from common.data.quality import QualityReport

__all__ = ["SegmentationMasks", "read_segmentations"]

logger = logging.getLogger(__name__)


@dataclass
class SegmentationMasks:
    """Label maps of the source images the site's SEG objects cover; held in memory only.

    ``by_source`` maps a source image's SOPInstanceUID to its label map [rows, columns]
    (class index per pixel, 0 = background); ``segment_names`` names the classes.
    """

    segment_names: tuple[str, ...]
    by_source: dict[str, np.ndarray] = field(default_factory=dict)
    series_uids: set[str] = field(default_factory=set)


def _segment_labels(seg: hd.seg.Segmentation) -> dict[int, str]:
    return {n: seg.get_segment_description(n).segment_label for n in seg.get_segment_numbers()}


def read_segmentations(
    paths: list[Path],
    root: Path,
    report: QualityReport,
    segment_names: tuple[str, ...] | None = None,
) -> SegmentationMasks:
    """Read every SEG object; an unreadable one is listed in ``report`` and skipped.

    Segments are matched to classes by their SegmentLabel: ``segment_names`` (background
    first) fixes the order, so that every site numbers classes alike; without it the classes
    are the labels found, sorted. A segment whose label is not among ``segment_names`` is
    reported and ignored.
    """
    objects: list[tuple[Path, hd.seg.Segmentation]] = []
    for path in paths:
        try:
            objects.append((path, hd.seg.segread(path)))
        except Exception as exc:  # highdicom and pydicom raise many types on damaged files
            # the exception type only: highdicom's messages may quote UIDs
            reason = f"DICOM SEG not readable ({type(exc).__name__})"
            report.skip(path.relative_to(root).as_posix(), reason)
    report.segmentation_objects += len(objects)
    found = sorted({label for _, seg in objects for label in _segment_labels(seg).values()})
    names = segment_names or ("background", *found)
    masks = SegmentationMasks(segment_names=tuple(names))
    for path, seg in objects:
        relative = path.relative_to(root).as_posix()
        labels = _segment_labels(seg)
        lookup = np.zeros(max(labels, default=0) + 1, dtype=np.uint8)
        for number, label in labels.items():
            if label in names[1:]:
                lookup[number] = names.index(label)
            else:
                report.skip(f"{relative} segment {number}", f"label not among classes {names}")
        sources = [uid for _, _, uid in seg.get_source_image_uids()]
        try:
            pixels = seg.get_pixels_by_source_instance(
                sources,
                combine_segments=True,
                ignore_spatial_locations=True,
                assert_missing_frames_are_empty=True,
                skip_overlap_checks=True,
            )
        except Exception as exc:
            report.skip(relative, f"DICOM SEG frames not readable ({type(exc).__name__})")
            continue
        for uid, frame in zip(sources, pixels, strict=True):
            masks.by_source[str(uid)] = lookup[frame]
        masks.series_uids.update(str(series) for _, series, _ in seg.get_source_image_uids())
    logger.info("read %d DICOM SEG objects covering %d images", len(objects), len(masks.by_source))
    return masks
