"""`medfed-site check` and `prepare` on real DICOM files, as hospital IT runs them."""

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
from warm_command_lines import run_command_line

from common.data.loading import load_dataset
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import pseudonymous_path


def _site(*args: str) -> subprocess.CompletedProcess[str]:
    return run_command_line("medfed-site", *args, timeout=300, env={"COLUMNS": "200", "PATH": ""})


def test_prepare_caches_labelled_images_split_by_study(hospital_export, tmp_path: Path) -> None:
    export, labels, _ = hospital_export
    cache = tmp_path / "cache"
    result = _site("prepare", "--data", str(export), "--out", str(cache), "--labels", str(labels),
                   "--size", "32", "--spacing", "1.0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((cache / "qc_report.json").read_text())
    skipped = {entry["path"]: entry["reason"] for entry in report["skipped_files"]}
    named = SitePseudonymiser.from_key_file(cache / ".site-key")  # folder names may be IDs
    assert skipped[pseudonymous_path("README.txt", named)].startswith("not a DICOM file")
    truncated = pseudonymous_path("patient0/study/series/IM0002.dcm", named)
    assert skipped[truncated].startswith("damaged: pixel data shorter than its header declares")
    assert truncated.endswith(".dcm") and "patient0" not in json.dumps(report)
    assert report["series_per_modality"] == {"CT": 6}
    assert report["class_counts"] == {"lesion": 15, "normal": 14}  # 30 slices, 1 truncated
    intensity = report["intensity_per_modality"]["CT"]
    assert -100 < intensity["mean"] < 50  # stored 1000 + intercept -1024: Hounsfield units

    splits = load_dataset(cache)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 29
    assert splits.class_names == ("lesion", "normal")
    assert splits.train.images.shape[1:] == (1, 32, 32)
    with (cache / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    splits_of_study: dict[str, set[str]] = {}
    for row in rows:
        splits_of_study.setdefault(row["study"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of_study.values())  # no study in two splits
    assert {next(iter(s)) for s in splits_of_study.values()} == {"train", "val", "test"}
    assert (cache / ".site-key").stat().st_mode & 0o777 == 0o600


def test_check_reports_without_writing_a_cache(hospital_export, tmp_path: Path) -> None:
    export, labels, _ = hospital_export
    report_path = tmp_path / "qc.json"
    result = _site(
        "check", "--data", str(export), "--labels", str(labels), "--report", str(report_path)
    )
    assert result.returncode == 0, result.stderr
    assert "Skipped files (2)" in result.stdout and "IM0002.dcm" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["images_per_modality"] == {"CT": 29}
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["export", "labels.csv", "qc.json", "qc.json.debug.log"]
    assert "IM0002.dcm" in (tmp_path / "qc.json.debug.log").read_text()  # the decoder's traceback
    missing_key = _site("check", "--data", str(export), "--key", str(tmp_path / "site-key"))
    assert missing_key.returncode == 2 and "site-key is not a site key file" in missing_key.stderr
    assert not (tmp_path / "site-key").exists()


def test_bad_labels_and_empty_folders_fail_clearly(hospital_export, tmp_path: Path) -> None:
    export, _, _ = hospital_export
    bad = tmp_path / "bad.csv"
    bad.write_text("PatientID,diagnosis\nx,1\n")
    result = _site(
        "prepare", "--data", str(export), "--out", str(tmp_path / "c"), "--labels", str(bad)
    )
    assert result.returncode == 3 and "bad.csv" in result.stderr and "label" in result.stderr
    result = _site("prepare", "--data", str(export), "--out", str(tmp_path / "c"))
    assert result.returncode == 2 and "give a labels CSV" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    result = _site("check", "--data", str(empty))
    assert result.returncode == 3 and "no usable image among 1 files" in result.stderr
    assert "not a DICOM file" in result.stdout  # the reason is listed before the error


def test_cache_epochs_never_decode_dicom(hospital_export, tmp_path: Path) -> None:
    """The cache is plain arrays: reading it needs no DICOM file at all."""
    export, labels, _ = hospital_export
    cache = tmp_path / "cache"
    assert (
        _site(
            "prepare", "--data", str(export), "--out", str(cache), "--labels", str(labels)
        ).returncode
        == 0
    )
    for path in export.rglob("*"):
        if path.is_file():
            path.unlink()
    splits = load_dataset(cache)
    assert np.isfinite(splits.train.images).all() and len(splits.train) > 0
