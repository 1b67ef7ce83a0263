"""`prepare --missing-sequence`: a study lacking a sequence is left out, or zero-filled and said so.

Under ``zeros`` a mask channel per sequence (1 where the study has it) follows the images, and
`medfed predict` replays both from the contract.

Real generated T1 + FLAIR DICOM studies with a DICOM SEG each, prepared by `medfed-site prepare`
through its command line.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cached_images import cached_images_by
from typer.testing import CliRunner

from client.cli import app as site_app
from client.inference.sources import find_sources
from client.inference.study_inputs import StudyInput, read_studies
from client.inference.study_replay import study_replay
from common.data.dicom_prepare import PreprocessingConfig
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
    """The cached uint8 images of each study, by study pseudonym."""
    return cached_images_by(cache, "study")


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
    assert (
        contract.missing_sequence, contract.channel_names, contract.channels,
        contract.presence_channels,
    ) == ("zeros", "T1,FLAIR", 4, True)  # fmt: skip
    assert contract.sha256 != skip_contract.sha256  # a job tells the two caches apart
    images = _by_study(zeros)
    # channels: T1, FLAIR, then the mask channels of T1 and FLAIR (255: present, 0: filled)
    assert images[lacking].shape[-1] == 4 and not images[lacking][..., 1].any()
    assert images[complete][..., 1].any() and images[lacking][..., 0].any()
    assert (images[lacking][..., 2] == 255).all() and not images[lacking][..., 3].any()
    assert (images[complete][..., 2:] == 255).all()
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


def test_predict_replays_the_zero_filled_study_with_its_mask_channels(
    studies: Path, tmp_path: Path
) -> None:
    """The study that lost its FLAIR gives predict the tensor its cache holds, masks included."""
    cache = tmp_path / "zeros"
    _prepare(studies, cache, "--sequences", "T1=T1,FLAIR=FLAIR", "--missing-sequence", "zeros")
    contract = read_contract_beside(cache)
    assert contract is not None
    replay = study_replay(contract, "T1=T1,FLAIR=FLAIR", None)
    assert replay is not None and replay.for_dicom().presence_channels
    found = find_sources(studies / "subject-01")
    config = PreprocessingConfig.of_contract(contract)
    (study,) = read_studies(found.sources, found.root, config, replay.for_dicom(), True)
    assert isinstance(study, StudyInput)
    cached = _by_study(cache)[_study_key(studies, cache, "subject-01")]
    batch = study.item.batch  # [K, C, size, size] against the cache's [K, size, size, C]
    assert batch.shape == (len(cached), 4, 32, 32)
    assert np.abs(batch.transpose(0, 2, 3, 1) - cached / 255.0).max() <= 2 / 255
    assert (batch[:, 2] == 1).all() and not batch[:, 3].any()
