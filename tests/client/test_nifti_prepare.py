"""`medfed-site prepare` on NIfTI: the Decathlon (MSD) layout and images/ + masks/."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from warm_command_lines import run_command_line

from common.data.loading import load_dataset
from common.data.nifti_cases import find_nifti_cases, read_nifti_case
from common.data.preprocessing_contract import read_contract_beside


def _case(folder_image: Path, folder_mask: Path, name: str, lesion_slices: range) -> None:
    rng = np.random.default_rng(len(name))
    volume = rng.normal(100, 10, (40, 36, 8)).astype(np.float32)  # (x, y, z)
    mask = np.zeros(volume.shape, dtype=np.uint8)
    for z in lesion_slices:
        mask[10:16, 12:18, z] = 1
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    folder_image.mkdir(parents=True, exist_ok=True)
    folder_mask.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume + 50 * mask, affine), folder_image / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(mask, affine), folder_mask / f"{name}.nii.gz")


def _msd(root: Path) -> Path:
    training = []
    for i in range(4):
        _case(root / "imagesTr", root / "labelsTr", f"case_{i:03d}", range(2, 2 + i + 1))
        training.append(
            {"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"}
        )
    (root / "dataset.json").write_text(json.dumps({"name": "test", "training": training}))
    return root


def test_msd_cases_read_as_axial_slices_with_their_masks(tmp_path: Path) -> None:
    cases = find_nifti_cases(_msd(tmp_path / "Task01"))
    assert [c.case_id for c in cases] == ["case_000", "case_001", "case_002", "case_003"]
    volume, mask, spacing = read_nifti_case(cases[2])
    assert volume.shape == (1, 8, 36, 40) and mask.shape == (8, 36, 40)
    assert spacing == pytest.approx((0.9, 0.9))
    assert [int(m.any()) for m in mask] == [0, 0, 1, 1, 1, 0, 0, 0]


def test_prepare_labels_slices_from_masks(tmp_path: Path) -> None:
    root = _msd(tmp_path / "Task01")
    cache = tmp_path / "cache"
    result = run_command_line(
        "medfed-site", "prepare", "--data", root, "--out", cache, "--size", "32", timeout=300
    )
    assert result.returncode == 0, result.stderr
    splits = load_dataset(cache)
    assert splits.class_names == ("no-foreground", "foreground")  # nothing names the mask
    total = np.concatenate([splits.train.labels, splits.val.labels, splits.test.labels])
    assert len(total) == 32 and total.sum() == 1 + 2 + 3 + 4  # lesion slices per case
    report = json.loads((cache / "qc_report.json").read_text())
    assert report["series_per_modality"] == {"NIfTI": 4}


def test_images_and_masks_folders_and_a_damaged_file(tmp_path: Path) -> None:
    root = tmp_path / "site"
    _case(root / "images", root / "masks", "a", range(1, 3))
    (root / "images" / "broken.nii.gz").write_bytes(b"not gzip")
    cases = find_nifti_cases(root)
    assert [(c.case_id, c.mask is not None) for c in cases] == [("a", True), ("broken", False)]


def test_msd_multi_channel_volumes_keep_every_channel(tmp_path: Path) -> None:
    """A 4D MSD volume (channels last) gives one cache channel per channel, each scaled alone."""
    root = tmp_path / "Task01_BrainTumour"
    training = []
    for i in range(3):
        _case(root / "imagesTr", root / "labelsTr", f"case_{i:03d}", range(2, 4))
        path = root / "imagesTr" / f"case_{i:03d}.nii.gz"
        first = nib.load(path)
        volume = np.asarray(first.dataobj)
        # the second channel is the first reversed, on another intensity scale
        channels = np.stack([volume, 5000 - 3 * volume], axis=-1)
        nib.save(nib.Nifti1Image(channels, first.affine), path)
        training.append(
            {"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"}
        )
    _case(root / "imagesTr", root / "labelsTr", "case_003", range(2, 4))  # one channel only
    training.append({"image": "./imagesTr/case_003.nii.gz", "label": "./labelsTr/case_003.nii.gz"})
    manifest = {"training": training, "modality": {"0": "FLAIR", "1": "T1w"}}
    (root / "dataset.json").write_text(json.dumps(manifest))
    cache = tmp_path / "cache"
    result = run_command_line(
        "medfed-site", "prepare", "--data", root, "--out", cache, "--size", "32",
        "--task", "segmentation", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    splits = load_dataset(cache, image_size=32)
    images = np.concatenate([splits.train.images, splits.val.images, splits.test.images])
    assert images.shape == (3 * 8, 2, 32, 32)  # [N, C, H, W], as the networks read them
    # each channel scaled to [0, 1] by its own percentiles: the reversed one is 1 - the first
    assert np.abs(images[:, 0] + images[:, 1] - 1).max() <= 2 / 255
    contract = read_contract_beside(cache)
    assert contract is not None
    assert (contract.channels, contract.channel_names) == (2, "FLAIR,T1w")
    report = json.loads((cache / "qc_report.json").read_text())
    assert report["series_per_modality"] == {"NIfTI": 3}
    assert "1 channels, the first case has 2" in json.dumps(report)
