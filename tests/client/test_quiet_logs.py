"""Quiet by default: a real `medfed-site check` and `prepare` on a folder with many bad files
print the reasons grouped with a count and no third-party warning; with --verbose pydicom's
warnings (here: an encapsulated JPEG 2000 file cut short) reach the console."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from simulations.dicom_writer import SeriesIdentity, write_dicom_series

#: What only pydicom says (its warning for encapsulated pixel data cut before its delimiter).
_PYDICOM_WARNING = "End of file reached before delimiter"
_JUNK = 23


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four labelled CT series, 23 text files, and 3 cut JPEG 2000 files; (folder, labels)."""
    root = tmp_path_factory.mktemp("quiet")
    folder = root / "export"
    rows = ["SeriesInstanceUID,label"]
    rng = np.random.default_rng(0)
    for i in range(4):
        identity = SeriesIdentity(patient_id=f"P{i}", modality="CT")
        volume = 1000.0 + rng.normal(0, 20, (4, 24, 24))
        write_dicom_series(volume, (3.0, 0.7, 0.7), folder / f"s{i}", identity, (1.0, -1024.0))
        rows.append(f"{identity.series_uid},{'ab'[i % 2]}")
    for k in range(_JUNK):
        (folder / f"notes{k:02d}.txt").write_text("exported by PACS\n")
    raw = Path(str(get_testdata_file("MR_small_jp2klossless.dcm"))).read_bytes()
    for k, share in enumerate((0.6, 0.75, 0.9)):
        (folder / f"cut{k}.dcm").write_bytes(raw[: int(len(raw) * share)])
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return folder, labels


def _site(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from client.cli import app; app()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_check_groups_repeated_reasons_and_hides_third_party_warnings(export) -> None:
    folder, labels = export
    quiet = _site("check", "--data", str(folder), "--labels", str(labels))
    assert quiet.returncode == 0, quiet.stderr
    text = " ".join((quiet.stdout + quiet.stderr).split())
    assert f"Skipped files ({_JUNK + 3}), grouped by reason" in text
    assert re.search(rf"│ +{_JUNK} │ not a DICOM file", text)  # one row with its count
    assert text.count("notes") <= 2  # its examples only
    for noise in (_PYDICOM_WARNING, "UserWarning", "Traceback", "WARNING"):
        assert noise not in text

    verbose = _site("check", "--data", str(folder), "--labels", str(labels), "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert _PYDICOM_WARNING in " ".join(verbose.stderr.split())


def test_prepare_is_as_quiet_and_keeps_the_warnings_in_its_debug_log(
    export, tmp_path: Path
) -> None:
    folder, labels = export
    cache = tmp_path / "cache"
    quiet = _site("prepare", "--data", str(folder), "--labels", str(labels), "--out", str(cache))
    assert quiet.returncode == 0, quiet.stderr
    text = " ".join((quiet.stdout + quiet.stderr).split())
    assert re.search(rf"│ +{_JUNK} │ not a DICOM file", text)
    assert _PYDICOM_WARNING not in text and "UserWarning" not in text
    assert _PYDICOM_WARNING in (cache / "debug.log").read_text()
