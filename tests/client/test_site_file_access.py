"""`medfed-site check` and `prepare` open only regular files, report what they cannot read, and
refuse oversized pixel data before decoding it (real files, real subprocesses)."""

import ctypes
import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from client.cli import app
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import pseudonymous_path

REPO = Path(__file__).resolve().parents[2]
_SITE = "from client.cli import app; app()"
_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2


def _site(*args: str, timeout: float = 60, preexec=None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", _SITE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=preexec,
    )


def _export(tmp_path: Path, studies: int = 1) -> Path:
    """CT_small.dcm as ``series/ct.dcm``, plus copies as other patients' studies ``ct1.dcm``..."""
    data = tmp_path / "export"
    (data / "series").mkdir(parents=True)
    shutil.copy(get_testdata_file("CT_small.dcm"), data / "series" / "ct.dcm")
    for study in range(1, studies):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.PatientID = f"{ds.PatientID}-{study}"  # the split is by patient
        ds.save_as(data / "series" / f"ct{study}.dcm")
    return data


_PATHS = ("dangling.dcm", "locked", "loop", "secret.dcm", "series/pipe.dcm", "series/ct.dcm")


def _reasons(report: Path, key: Path) -> dict[str, str]:
    """Reasons by real path: the JSON report names files by pseudonyms under the site key."""
    named = SitePseudonymiser.from_key_file(key)
    real = {pseudonymous_path(p, named): p for p in _PATHS}
    skipped = json.loads(report.read_text())["skipped_files"]
    return {real.get(s["path"], s["path"]): s["reason"] for s in skipped}


def _key(tmp_path: Path) -> Path:
    """A site key file (created on first use), so the test can name the report's pseudonyms."""
    SitePseudonymiser.from_key_file(tmp_path / "site-key")
    return tmp_path / "site-key"


def _drop_read_override() -> None:
    """Child of a root test: lose the capabilities that let root read a mode-000 file."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_check_lists_special_and_unreadable_entries_without_opening_them(tmp_path: Path) -> None:
    data = _export(tmp_path)
    os.mkfifo(data / "series" / "pipe.dcm")  # opening it would block until a writer comes
    locked = data / "locked"
    locked.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), locked / "hidden.dcm")
    secret = data / "secret.dcm"
    shutil.copy(get_testdata_file("MR_small.dcm"), secret)
    os.symlink(tmp_path / "missing.dcm", data / "dangling.dcm")
    os.symlink(tmp_path, data / "loop")
    locked.chmod(0)
    secret.chmod(0)
    preexec = None
    if os.geteuid() == 0:  # root reads mode-000 files unless it drops CAP_DAC_OVERRIDE
        try:
            subprocess.run(["true"], preexec_fn=_drop_read_override, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"running as root without CAP_SETPCAP: chmod 000 cannot deny ({exc})")
        preexec = _drop_read_override
    report = tmp_path / "qc.json"
    try:
        result = _site("check", "--data", str(data), "--report", str(report),
                       "--key", str(_key(tmp_path)), preexec=preexec)  # fmt: skip
    finally:
        locked.chmod(0o755)
        secret.chmod(0o644)
    assert result.returncode == 0, result.stderr
    assert "pipe.dcm" in result.stdout
    assert _reasons(report, _key(tmp_path)) == {
        "dangling.dcm": "file not readable (no such file or directory)",
        "locked": "folder not readable (permission denied)",
        "loop": "symbolic link to a folder: not followed",
        "secret.dcm": "file not readable (permission denied)",
        "series/pipe.dcm": "not a regular file (a FIFO (named pipe)): never opened",
    }
    assert json.loads(report.read_text())["images_per_modality"] == {"CT": 1}


def test_prepare_does_not_open_a_fifo(tmp_path: Path) -> None:
    data = _export(tmp_path, studies=3)
    os.mkfifo(data / "series" / "pipe.dcm")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nct.dcm,a\nct1.dcm,b\nct2.dcm,a\n")
    out = tmp_path / "cache"
    result = _site("prepare", "--data", str(data), "--labels", str(labels), "--out", str(out))
    assert result.returncode == 0, result.stderr
    reasons = _reasons(out / "qc_report.json", out / ".site-key")
    assert reasons == {"series/pipe.dcm": "not a regular file (a FIFO (named pipe)): never opened"}


def _huge_deflated(path: Path, rows: int, columns: int) -> None:
    """A deflated DICOM declaring rows x columns 16-bit pixels, written without holding them."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, columns, 16, 16, 15
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    pixels = rows * columns * 2
    element = b"\xe0\x7f\x10\x00OW\x00\x00" + pixels.to_bytes(4, "little")
    meta = DicomBytesIO()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    deflater = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 24)
    with path.open("wb") as out:
        out.write(b"\x00" * 128 + b"DICM" + meta.getvalue())
        out.write(deflater.compress(body.getvalue() + element))
        for _ in range(pixels // len(zeros)):
            out.write(deflater.compress(zeros))
        out.write(deflater.flush())


def _lying_header(path: Path) -> None:
    """An uncompressed file whose header declares 1 GiB of pixels over 2 bytes of pixel data."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 16384, 16384, 2
    ds.PixelData = b"\x00\x00"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


_SCAN_WITH_PEAK = """
import resource, sys, json
from common.data.dicom_image import ImageReducer
from common.data.dicom_scan import scan_dicom_folder
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after the imports
scan = scan_dicom_folder(sys.argv[1], read_image=ImageReducer(None, 64, keep_pixels=False))
growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"growth_mib": growth_mib, "series": len(scan.series),
                  "problems": {p.path.as_posix(): p.reason for p in scan.problems}}))
"""


def test_declared_pixel_size_is_capped_before_decoding(tmp_path: Path) -> None:
    data = _export(tmp_path)
    _huge_deflated(data / "deflated.dcm", 16384, 32768)  # 1 GiB declared
    _lying_header(data / "lying.dcm")
    assert (data / "deflated.dcm").stat().st_size < 8 << 20  # a 1 GiB image in 5 MB
    result = subprocess.run(
        [sys.executable, "-c", _SCAN_WITH_PEAK, str(data)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["series"] == 1  # the honest CT file is still read
    assert found["problems"]["deflated.dcm"] == (
        "refused: its deflated data set inflates to more than 256 MiB of pixels "
        "(the --max-pixel-mib cap)"
    )
    assert found["problems"]["lying.dcm"].startswith(
        "refused: its header declares 1024 MiB of pixels (16384 x 16384 x 2 frames x 1 samples"
    )
    # Peak RSS growth over the imports: pydicom alone inflated 1 GiB, and decoding took 3.7 GB.
    assert found["growth_mib"] < 64, found


def test_max_pixel_mib_option_is_checked_and_applied(tmp_path: Path) -> None:
    data = _export(tmp_path)
    result = CliRunner().invoke(app, ["check", "--data", str(data), "--max-pixel-mib", "nan"])
    assert result.exit_code == 2
    assert "--max-pixel-mib: nan must be a finite number above 0" in result.output
    shutil.copy(get_testdata_file("MR_small.dcm"), data / "mr.dcm")  # 8 KiB of pixels
    report = tmp_path / "qc.json"
    args = ["check", "--data", str(data), "--report", str(report), "--max-pixel-mib", "0.01",
            "--key", str(_key(tmp_path))]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    reasons = _reasons(report, _key(tmp_path))
    assert "above the 0.01 MiB cap" in reasons["series/ct.dcm"]  # a 32 KiB image
