"""Labels for DICOM data: a CSV keyed by file name, SeriesInstanceUID or StudyInstanceUID."""

import csv
from dataclasses import dataclass
from pathlib import Path

from common.errors import DataFormatError

__all__ = ["KEY_COLUMNS", "LabelManifest", "read_label_manifest"]

#: Accepted key columns, most specific first.
KEY_COLUMNS = ("file", "SeriesInstanceUID", "StudyInstanceUID")


@dataclass(frozen=True)
class LabelManifest:
    """Class label per key; a file's label comes from its own row, else its series, else study."""

    key_column: str
    labels: dict[str, str]
    class_names: tuple[str, ...]

    @property
    def keyed_by_file(self) -> bool:
        """True when files of one series may have different labels."""
        return self.key_column == "file"

    def label_for(self, relative_path: Path, series_uid: str, study_uid: str) -> int | None:
        """Class index for one file, or None when the manifest does not label it."""
        if self.keyed_by_file:
            raw = self.labels.get(relative_path.as_posix(), self.labels.get(relative_path.name))
            return None if raw is None else self.class_names.index(raw)
        return self.series_label(series_uid, study_uid)

    def series_label(self, series_uid: str, study_uid: str) -> int | None:
        """Class index of every file of a series (manifests keyed by series or study UID)."""
        if self.keyed_by_file:
            raise ValueError("a manifest keyed by file name labels files, not series")
        key = series_uid if self.key_column == "SeriesInstanceUID" else study_uid
        raw = self.labels.get(key)
        return None if raw is None else self.class_names.index(raw)


def read_label_manifest(path: Path, class_order: tuple[str, ...] | None = None) -> LabelManifest:
    """Read a CSV with a ``label`` column and one key column of :data:`KEY_COLUMNS`.

    Class indices follow ``class_order`` when given (for a binary task, put the negative class
    first: metrics such as recall refer to class 1); otherwise numbers in numeric order, then
    names alphabetically.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "labels CSV not found")
    if not path.is_file():
        raise DataFormatError(path, "the labels CSV is not a regular file")
    try:
        return _read(path, class_order)
    except (UnicodeDecodeError, csv.Error) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise DataFormatError(path, f"not a readable labels CSV ({reason})") from None
    except OSError as exc:
        raise DataFormatError(path, f"labels CSV not readable ({exc.strerror or exc})") from None


def _read(path: Path, class_order: tuple[str, ...] | None) -> LabelManifest:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        keys = [c for c in KEY_COLUMNS if c in columns]
        if "label" not in columns or len(keys) != 1:
            raise DataFormatError(
                path,
                f"needs a 'label' column and exactly one key column of {list(KEY_COLUMNS)}; "
                f"found {columns}",
            )
        key_column = keys[0]
        labels: dict[str, str] = {}
        problems = []
        for line, row in enumerate(reader, start=2):
            key, label = (row.get(key_column) or "").strip(), (row.get("label") or "").strip()
            if not key or not label:
                problems.append(f"row {line}: empty {key_column if not key else 'label'}")
            elif key in labels and labels[key] != label:
                problems.append(f"row {line}: {key_column} listed again with another label")
            else:
                labels[key] = label
    if problems:
        raise DataFormatError(path, f"{len(problems)} bad row(s): " + "; ".join(problems))
    if not labels:
        raise DataFormatError(path, "no labelled rows")
    if class_order is not None:
        unknown = sorted(set(labels.values()) - set(class_order))
        if unknown:
            raise DataFormatError(
                path, f"label(s) {unknown} are not among the classes {list(class_order)}"
            )
        return LabelManifest(key_column=key_column, labels=labels, class_names=tuple(class_order))
    names = sorted(
        set(labels.values()), key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v)
    )
    return LabelManifest(key_column=key_column, labels=labels, class_names=tuple(names))
