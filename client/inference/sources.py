"""Find what to predict on under ``--input``: DICOM series, NIfTI volumes and pictures."""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.data.dicom_scan import SeriesFiles, scan_dicom_folder
from common.data.picture_cases import PICTURE_SUFFIXES
from common.errors import DataFormatError

__all__ = ["NIFTI_SUFFIXES", "PICTURE_SUFFIXES", "Skipped", "Source", "Sources", "find_sources"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")

Kind = Literal["dicom", "nifti", "picture"]


@dataclass(frozen=True)
class Skipped:
    """An input file left out, and why (never a DICOM attribute value)."""

    input: str
    reason: str


@dataclass(frozen=True)
class Source:
    """One thing to predict on: a DICOM series, a NIfTI volume or a picture."""

    #: Path relative to ``--input``: the file, or for a DICOM series the folder of its files.
    name: str
    kind: Kind
    #: The input's files, absolute; a DICOM series' files in slice order.
    files: tuple[Path, ...]
    #: DICOM series found by the folder scan (None for a single DICOM file given directly).
    series: SeriesFiles | None = None


@dataclass
class Sources:
    """Everything found under ``--input`` and every file that will not be used."""

    #: Folder every name is relative to (``--input``, or its parent for a single file).
    root: Path
    sources: list[Source] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def kind_of(path: Path) -> Kind:
    """Input kind from the file name: NIfTI and pictures by suffix, anything else DICOM."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PICTURE_SUFFIXES):
        return "picture"
    return "dicom"


def _series_sources(series: list[SeriesFiles], root: Path) -> list[Source]:
    """Name each series by the folder of its files (numbered when a folder holds several)."""
    by_folder: dict[str, list[SeriesFiles]] = {}
    for entry in series:
        folder = Path(os.path.commonpath([s.path.parent for s in entry.slices]))
        relative = folder.relative_to(root).as_posix()
        by_folder.setdefault(relative if relative != "." else root.name, []).append(entry)
    sources = []
    for label in sorted(by_folder):
        entries = sorted(by_folder[label], key=lambda e: min(s.path for s in e.slices))
        for number, entry in enumerate(entries, start=1):
            name = label if len(entries) == 1 else f"{label} (series {number})"
            files = tuple(s.path for s in entry.slices)
            sources.append(Source(name=name, kind="dicom", files=files, series=entry))
    return sources


def find_sources(
    path: Path,
    exclude: Path | None = None,
    on_file: Callable[[int, int], None] | None = None,
) -> Sources:
    """Inputs of a file or of a folder (any depth); files under ``exclude`` are ignored.

    In a folder, NIfTI and picture files are recognised by suffix and every other file is read
    as DICOM, grouped into series by :func:`common.data.dicom_scan.scan_dicom_folder`. Files
    that are not images (reports, DICOM SEG objects, damaged headers) are listed as skipped.

    Raises:
        DataFormatError: ``path`` does not exist.
    """
    path = path.resolve()
    if path.is_file():
        return Sources(path.parent, [Source(path.name, kind_of(path), (path,))])
    if not path.is_dir():
        raise DataFormatError(path, "no such file or folder")
    excluded = exclude.resolve() if exclude is not None else None

    def wanted(file: Path) -> bool:
        return excluded is None or not file.is_relative_to(excluded)

    found = Sources(path)
    others = sorted(p for p in path.rglob("*") if p.is_file() and wanted(p))
    for file in others:
        kind = kind_of(file)
        if kind != "dicom":
            found.sources.append(Source(file.relative_to(path).as_posix(), kind, (file,)))
    scan = scan_dicom_folder(path, on_file=on_file)
    for problem in scan.problems:
        file = path / problem.path
        if wanted(file) and kind_of(file) == "dicom":
            found.skipped.append(Skipped(problem.path.as_posix(), problem.reason))
    for seg in scan.segmentations:
        if wanted(seg):
            found.skipped.append(
                Skipped(seg.relative_to(path).as_posix(), "DICOM SEG object, not an image")
            )
    series = [s for s in scan.series.values() if all(wanted(h.path) for h in s.slices)]
    found.sources = _series_sources(series, path) + found.sources
    return found
