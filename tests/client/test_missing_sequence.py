"""`prepare --missing-sequence`: a study lacking a sequence is left out, or zero-filled and said so.

Real generated T1 + FLAIR DICOM studies with a DICOM SEG each, prepared by `medfed-site prepare`
through its command line.
"""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from client.cli import app as site_app
from common.data.preprocessing_contract import read_contract_beside
from common.data.pseudonyms import SitePseudonymiser
from simulations.brain_sequences import write_sequence_sites

_COMMON = ("--task", "segmentation", "--spacing", "6", "--size", "32", "--register", "none")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four T1 + FLAIR studies (a split needs 3 patients); subject-01 has lost its FLAIR."""
    out = tmp_path_factory.mktemp("missing")
    site = write_sequence_sites(out, ("T1", "FLAIR"), sites=1, subjects_per_site=4, seed=4)[0]
    shutil.rmtree(site / "dicom" / "subject-01" / "FLAIR")
    return site / "dicom"


def _prepare(data: Path, out: Path, *args: str) -> dict:
    result = CliRunner().invoke(
        site_app, ["prepare", "--data", str(data), "--out", str(out), *_COMMON, *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "qc_report.json").read_text())


def _by_study(cache: Path) -> dict[str, np.ndarray]:
    """The cached uint8 images [slices, size, size, C] of each study, by study pseudonym."""
    data = np.load(cache / "dataset.npz")
    position: dict[str, int] = {}
    found: dict[str, list[np.ndarray]] = {}
    with (cache / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            index = position.setdefault(row["split"], 0)
            position[row["split"]] += 1
            found.setdefault(row["study"], []).append(data[f"{row['split']}_images"][index])
    return {study: np.stack(images) for study, images in found.items()}


def _study_key(data: Path, cache: Path, subject: str) -> str:
    from pydicom import dcmread

    first = next((data / subject / "T1").glob("*.dcm"))
    return SitePseudonymiser.from_key_file(cache / ".site-key")(dcmread(first).StudyInstanceUID)


def test_skip_leaves_the_study_out_and_zeros_fills_its_channel(
    studies: Path, tmp_path: Path
) -> None:
    skipped = _prepare(studies, tmp_path / "skip", "--sequences", "T1=T1,FLAIR=FLAIR")
    lacking = _study_key(studies, tmp_path / "skip", "subject-01")
    assert {"key": lacking, "reason": "study without sequence FLAIR (--sequences)"} in skipped[
        "excluded"
    ]
    assert lacking not in _by_study(tmp_path / "skip") and len(_by_study(tmp_path / "skip")) == 3
    skip_contract = read_contract_beside(tmp_path / "skip")
    assert skip_contract is not None and skip_contract.missing_sequence == "skip"

    zeros = tmp_path / "zeros"
    report = _prepare(
        studies, zeros, "--sequences", "T1=T1,FLAIR=FLAIR", "--missing-sequence", "zeros"
    )
    lacking, complete = (_study_key(studies, zeros, s) for s in ("subject-01", "subject-00"))
    assert "excluded" not in report and len(_by_study(zeros)) == 4
    missing_rows = [r for r in report["registration"] if r["status"] == "missing, zero-filled"]
    assert missing_rows == [
        {
            "study": lacking,
            "sequence": "FLAIR",
            "status": "missing, zero-filled",
            "reason": "no series matches it: channel filled with zeros (--missing-sequence zeros)",
        }
    ]
    contract = read_contract_beside(zeros)
    assert contract is not None
    assert (contract.missing_sequence, contract.channel_names, contract.channels) == (
        "zeros", "T1,FLAIR", 2,
    )  # fmt: skip
    assert contract.sha256 != skip_contract.sha256  # a job tells the two caches apart
    images = _by_study(zeros)
    assert images[lacking].shape[-1] == 2 and not images[lacking][..., 1].any()
    assert images[complete][..., 1].any() and images[lacking][..., 0].any()
    # the T1 channel of the zero-filled study is what a T1-only prepare gives: nothing else moved
    t1_only = tmp_path / "t1"
    _prepare(studies, t1_only, "--sequences", "T1=T1")
    alone = _by_study(t1_only)[_study_key(studies, t1_only, "subject-01")]
    assert np.array_equal(alone, images[lacking][..., 0])


def test_zeros_needs_sequences(studies: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        site_app,
        ["prepare", "--data", str(studies), "--out", str(tmp_path / "c"), *_COMMON,
         "--missing-sequence", "zeros"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "--missing-sequence" in result.output and "--sequences" in result.output
