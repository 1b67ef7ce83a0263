"""The generated demo DICOM and the SEG objects medfed writes pass dicom3tools' `dciodvfy`."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from client.inference.dicom_seg import write_dicom_seg
from simulations.dicom_writer import SeriesIdentity, write_dicom_series
from simulations.seg_writer import write_simulated_lesion_seg

DCIODVFY = shutil.which("dciodvfy")
pytestmark = pytest.mark.skipif(
    DCIODVFY is None, reason="dciodvfy not installed (apt-get install dicom3tools; .ci/run does)"
)


def _errors(path: Path) -> list[str]:
    """The validator's error lines for one file (it reports on stderr, exit code 0 either way)."""
    assert DCIODVFY is not None
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_generated_series_and_their_segs_have_no_validator_error(
    modality: str, tmp_path: Path
) -> None:
    volume = np.full((3, 16, 20), 100.0)
    identity = SeriesIdentity(modality=modality)
    rescale = (1.0, -1024.0) if modality == "CT" else (1.0, 0.0)
    paths = write_dicom_series(volume, (2.0, 0.9, 0.9), tmp_path / "series", identity, rescale)
    mask = np.zeros(volume.shape, dtype=np.uint8)
    mask[1, 4:9, 5:11] = 1
    simulated = write_simulated_lesion_seg(paths, mask, tmp_path / "seg.dcm", "validity")
    predicted = write_dicom_seg(
        paths, mask, ["background", "lesion"], tmp_path / "predicted.dcm", "medfed test", "1"
    )
    for path in [*paths, simulated, predicted]:
        assert _errors(path) == [], path.name


def test_the_validator_reports_a_missing_type1_attribute(tmp_path: Path) -> None:
    """The check can fail: an MR slice without ImageType is an error for dciodvfy."""
    (path,) = write_dicom_series(np.full((1, 8, 8), 50.0), (1, 1, 1), tmp_path, SeriesIdentity())
    ds = pydicom.dcmread(path)
    del ds.ImageType
    ds.save_as(path)
    assert any("ImageType" in line for line in _errors(path))
