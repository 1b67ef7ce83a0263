from pathlib import Path

import pytest

from common.data.label_manifest import read_label_manifest
from common.errors import DataFormatError


def test_file_keys_match_relative_path_or_name(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("file,label\na/b/IM1.dcm,lesion\nIM2.dcm,normal\n")
    manifest = read_label_manifest(path)
    assert manifest.class_names == ("lesion", "normal")
    assert manifest.label_for(Path("a/b/IM1.dcm"), "s", "t") == 0
    assert manifest.label_for(Path("x/IM2.dcm"), "s", "t") == 1
    assert manifest.label_for(Path("x/IM3.dcm"), "s", "t") is None


def test_class_order_puts_the_negative_class_first(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("StudyInstanceUID,label\n1.2.3,lesion\n1.2.4,no-lesion\n")
    manifest = read_label_manifest(path, ("no-lesion", "lesion"))
    assert manifest.label_for(Path("f"), "s", "1.2.3") == 1
    with pytest.raises(DataFormatError, match=r"\['lesion'\] are not among the classes"):
        read_label_manifest(path, ("no-lesion", "tumour"))


def test_conflicting_and_empty_rows_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("SeriesInstanceUID,label\n1.2,a\n1.2,b\n,a\n1.3,\n")
    with pytest.raises(DataFormatError) as err:
        read_label_manifest(path)
    message = str(err.value)
    assert (
        "3 bad row(s)" in message
        and "row 3" in message
        and "row 4" in message
        and "row 5" in message
    )


def test_key_column_is_required(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("PatientID,label\nx,1\n")
    with pytest.raises(DataFormatError, match="exactly one key column"):
        read_label_manifest(path)
