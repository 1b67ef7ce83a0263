"""`medfed predict` on a model trained on stacked sequences: prepare's alignment, replayed.

Real generated T1 + FLAIR DICOM studies (each sequence with its own head motion), prepared by
`medfed-site prepare --sequences` (FLAIR co-registered to T1), a checkpoint carrying the cache's
contract, and `medfed predict` through its command line: masks back on the T1, and a fused
classifier's Grad-CAM drawn on each sequence with each sequence's share of the decision.
"""

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from cached_images import cached_images_by
from PIL import Image
from typer.testing import CliRunner

from client.cli import app as site_app
from client.inference.channel_saliency import channel_shares
from client.inference.sources import Skipped, find_sources
from client.inference.study_inputs import StudyInput, read_studies
from client.inference.study_replay import study_replay
from client.predict_cli import app as predict_app
from common.checkpoint import save_checkpoint
from common.data.dicom_prepare import PreprocessingConfig
from common.data.dicom_scan import scan_dicom_folder
from common.data.dicom_seg import read_segmentations
from common.data.preprocessing_contract import PreprocessingContract, read_contract_beside
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import QualityReport
from common.data.series_volume import VolumeReader, series_volume
from common.errors import ConfigError
from common.exit_codes import ExitCode
from common.federation_job import FederationJob
from common.models import build_model
from simulations.brain_sequences import write_sequence_sites

RULE = "T1=T1,FLAIR=FLAIR"
SIZE = 64


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("study-predict")
    data = write_sequence_sites(root, ("T1", "FLAIR"), sites=1, subjects_per_site=3, seed=6)[0]
    cache = root / "cache"
    result = CliRunner().invoke(
        site_app,
        ["prepare", "--data", str(data / "dicom"), "--out", str(cache), "--task",
         "segmentation", "--spacing", "3", "--size", str(SIZE), "--sequences", RULE],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    contract = read_contract_beside(cache)
    assert contract is not None and contract.channel_names == "T1,FLAIR"
    return {"dicom": data / "dicom", "cache": cache, "contract": contract}


def _cached(cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Cached uint8 images [K, size, size, C] and masks [K, size, size] by study pseudonym."""
    images = cached_images_by(cache, "study")
    masks = cached_images_by(cache, "study", "masks")
    return {study: (images[study], masks[study]) for study in images}


def _checkpoint(path: Path, contract: PreprocessingContract, lesion_everywhere: bool) -> Path:
    job = FederationJob.model_validate(
        {"task": "segmentation", "image_size": SIZE, "in_channels": 2,
         "class_names": "background,lesion",
         "preprocessing": contract}
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(job.model, 2, 2, (SIZE, SIZE), dp_enabled=False)
    if lesion_everywhere:
        with torch.no_grad():
            model.final_conv.weight.zero_()
            model.final_conv.bias.copy_(torch.tensor([-5.0, 5.0]))
    return save_checkpoint(path, model.state_dict(), job, 1)


def test_a_training_study_gives_the_cached_tensor_and_its_masks_go_back(site: dict) -> None:
    contract = site["contract"]
    replay = study_replay(contract, RULE, None)
    assert replay is not None
    found = find_sources(site["dicom"])
    studies = list(
        read_studies(
            found.sources, found.root, PreprocessingConfig.of_contract(contract),
            replay.for_dicom(), segmentation=True,
        )
    )  # fmt: skip
    assert len(studies) == 3 and all(isinstance(s, StudyInput) for s in studies)
    cached = _cached(site["cache"])
    key = SitePseudonymiser.from_key_file(site["cache"] / ".site-key")
    for study in studies:
        assert isinstance(study, StudyInput)
        assert study.item.source.series is not None
        images, masks = cached[key(study.item.source.series.study_uid)]
        batch = study.item.batch  # [K, C, size, size] against the cache's [K, size, size, C]
        assert batch.shape == (len(images), 2, SIZE, SIZE)
        difference = np.abs(batch.transpose(0, 2, 3, 1) - images / 255.0)
        assert difference.max() <= 2 / 255, difference.max()  # uint8 rounding, ITK threads
        # the cached masks go back onto the T1 slices, where its DICOM SEG drew the lesions
        scan = scan_dicom_folder(study.item.dicom_files[0].parents[1], read_image=VolumeReader())
        segs = read_segmentations(scan.segmentations, found.root, QualityReport(), None)
        (t1,) = [s for s in scan.series.values() if s.description == "T1"]
        truth = series_volume(t1, segs.by_source).mask
        assert truth is not None
        back = study.to_source(masks)
        truth_voxels = sitk.GetArrayFromImage(truth)
        assert back.shape == truth_voxels.shape
        overlap = 2 * (back & truth_voxels).sum() / (back.sum() + truth_voxels.sum())
        print(f"Dice of the cached masks back on T1 against its SEG: {overlap:.3f}")
        assert overlap > 0.8, overlap


def test_predict_writes_masks_on_the_first_sequence_grid(site: dict, tmp_path: Path) -> None:
    model = _checkpoint(tmp_path / "model.pt", site["contract"], lesion_everywhere=True)
    subject = site["dicom"] / "subject-00"
    runner = CliRunner()
    refused = runner.invoke(
        predict_app,
        ["predict", "--model", str(model), "--input", str(subject), "--out", str(tmp_path / "n")],
    )
    assert refused.exit_code == ExitCode.CONFIG_ERROR, refused.output
    assert "--sequences" in refused.output and "T1,FLAIR" in refused.output
    wrong = runner.invoke(
        predict_app,
        ["predict", "--model", str(model), "--input", str(subject), "--out", str(tmp_path / "w"),
         "--sequences", "FLAIR=FLAIR,T1=T1"],
    )  # fmt: skip
    assert wrong.exit_code == ExitCode.CONFIG_ERROR and "in that order" in wrong.output
    out = tmp_path / "out"
    result = runner.invoke(
        predict_app,
        ["predict", "--model", str(model), "--input", str(subject), "--out", str(out),
         "--sequences", RULE],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    t1_files = sorted((subject / "T1").glob("*.dcm"))
    rows, cols = pydicom.dcmread(t1_files[0]).pixel_array.shape
    (nifti,) = (out / "masks").glob("*.nii.gz")
    mask = np.asarray(nib.load(nifti).dataobj)
    assert mask.shape == (cols, rows, len(t1_files))  # the T1 series' own voxels
    # lesion everywhere on the kept grid slices: most of the head's T1 voxels, not all of them
    assert 0.3 < mask.mean() < 1.0
    (seg,) = (out / "dicom_seg").glob("*.dcm")
    referenced = pydicom.dcmread(seg).ReferencedSeriesSequence[0].SeriesInstanceUID
    assert referenced == pydicom.dcmread(t1_files[0]).SeriesInstanceUID


def _contract(**fields: object) -> PreprocessingContract:
    return PreprocessingContract.model_validate(
        {"task": "segmentation", "size": SIZE, "spacing_mm": 3.0, **fields}
    )


def test_the_options_a_contract_needs_are_checked_against_it(tmp_path: Path) -> None:
    plain = _contract()
    assert study_replay(plain, None, None) is None
    with pytest.raises(ConfigError, match="^--sequences"):
        study_replay(plain, RULE, None)
    stacked = _contract(channels=2, channel_names="T1,FLAIR", registration="atlas:rigid")
    replay = study_replay(stacked, None, None)
    assert replay is not None
    with pytest.raises(ConfigError, match="^--sequences.*T1,FLAIR"):
        replay.for_dicom()
    options = study_replay(stacked, "T1=*t1*,FLAIR=*flair*", None)
    assert options is not None
    assert (options.for_dicom().register, options.for_dicom().transform) == ("atlas", "rigid")
    volume = tmp_path / "ref.nii.gz"
    volume.write_bytes(b"the site's reference volume")
    digest = hashlib.sha256(volume.read_bytes()).hexdigest()[:16]
    registered = _contract(registration=f"reference:affine:{digest}")
    with pytest.raises(ConfigError, match="^--reference.*give that volume"):
        study_replay(registered, None, None)
    assert study_replay(registered, None, volume) is not None
    other = tmp_path / "other.nii.gz"
    other.write_bytes(b"another volume")
    with pytest.raises(ConfigError, match="^--reference.*not the volume"):
        study_replay(registered, None, other)


def test_a_study_missing_a_sequence_follows_the_contract(site: dict, tmp_path: Path) -> None:
    study = tmp_path / "subject-01"
    shutil.copytree(site["dicom"] / "subject-01" / "T1", study / "T1")  # FLAIR lost
    config = PreprocessingConfig.of_contract(site["contract"])
    found = find_sources(study)
    skip = study_replay(site["contract"], RULE, None)
    assert skip is not None
    (skipped,) = read_studies(found.sources, found.root, config, skip.for_dicom(), True)
    # named by the folder of its series (here only the T1's)
    assert skipped == Skipped("T1", "study without sequence FLAIR (--sequences)")
    fields = site["contract"].model_dump(exclude={"sha256"})
    zeros = study_replay(
        PreprocessingContract.model_validate({**fields, "missing_sequence": "zeros"}), RULE, None
    )
    assert zeros is not None
    (kept,) = read_studies(found.sources, found.root, config, zeros.for_dicom(), True)
    assert isinstance(kept, StudyInput)
    assert kept.item.batch.shape[1] == 2 and not kept.item.batch[:, 1].any()
    # kept slices: those the T1 alone covers (with FLAIR, those both cover: fewer or as many)
    everything = find_sources(site["dicom"] / "subject-01")
    (full,) = read_studies(everything.sources, everything.root, config, skip.for_dicom(), True)
    assert isinstance(full, StudyInput)
    assert len(kept.item.batch) == len(list((study / "T1").glob("*.dcm")))
    assert len(full.item.batch) <= len(kept.item.batch) and full.item.batch[:, 1].any()


def _classifier(path: Path, contract: PreprocessingContract, flair_only: bool) -> Path:
    """A fused T1 + FLAIR classifier; ``flair_only``: its convolutions of the input ignore T1."""
    fields = contract.model_dump(exclude={"sha256"})
    classification = PreprocessingContract.model_validate(
        {**fields, "task": "classification", "segment_names": "", "class_names": "no,yes"}
    )
    job = FederationJob.model_validate(
        {"task": "classification", "image_size": SIZE, "in_channels": 2,
         "class_names": "no,yes", "preprocessing": classification}
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(job.model, 2, 2, (SIZE, SIZE), dp_enabled=False)
    if flair_only:
        reading_input = [  # the first unit's convolution and its residual path
            m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 2
        ]
        assert len(reading_input) == 2
        with torch.no_grad():
            for conv in reading_input:
                conv.weight[:, 0] = 0.0
    return save_checkpoint(path, model.state_dict(), job, 1)


def test_grad_cam_is_drawn_on_each_sequence_with_its_share(site: dict, tmp_path: Path) -> None:
    model = _classifier(tmp_path / "model.pt", site["contract"], flair_only=True)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        predict_app,
        ["predict", "--model", str(model), "--input", str(site["dicom"] / "subject-00"),
         "--out", str(out), "--sequences", RULE],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    (entry,) = summary["inputs"]
    by_sequence = entry["saliency_overlays_by_sequence"]
    assert list(by_sequence) == ["T1", "FLAIR"]  # the contract's names, in channel order
    assert len(by_sequence["T1"]) == len(by_sequence["FLAIR"]) == entry["images"] > 1
    # the same slice's Grad-CAM over two different images: the two overlays differ
    t1, flair = (np.asarray(Image.open(out / by_sequence[n][0])) for n in ("T1", "FLAIR"))
    assert t1.shape == flair.shape == (SIZE, SIZE, 3) and not np.array_equal(t1, flair)
    # a network blind to T1 owes its decision to FLAIR alone
    assert entry["sequence_share"] == {"T1": 0.0, "FLAIR": 1.0}


def test_a_sequence_share_follows_the_network() -> None:
    """Input x gradient per channel: a network that weighs FLAIR 3x T1 gives it 3/4 of it."""
    network = torch.nn.Sequential(
        torch.nn.Conv2d(2, 1, 1, bias=False), torch.nn.Flatten(), torch.nn.LazyLinear(2)
    )
    batch = np.ones((2, 2, 4, 4), dtype=np.float32)
    network(torch.from_numpy(batch))
    with torch.no_grad():
        network[0].weight[:] = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    shares = channel_shares(network, batch, np.array([0, 1]), 2)
    assert np.allclose(shares, [[0.25, 0.75], [0.25, 0.75]])
