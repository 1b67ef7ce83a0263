"""`medfed-site prepare --dims 3`: each series or NIfTI case becomes one volume with its affine."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from typer.testing import CliRunner, Result

from client.cli import app
from common.data.loading import load_dataset
from common.data.volumes import voxel_spacing
from common.exit_codes import ExitCode
from simulations.dicom_writer import SeriesIdentity, write_dicom_series
from simulations.seg_writer import write_simulated_lesion_seg

#: Source voxels (slice, row, column) in mm: anisotropic, so every axis is resampled.
_SPACING = (2.5, 1.2, 1.5)


def _prepare(*args: str) -> Result:
    """`medfed-site prepare` in this process (no interpreter start-up per call)."""
    return CliRunner().invoke(app, ["prepare", *args])


def _lesion_volume(rng: np.random.Generator, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """A [slices, rows, cols] MR-like volume with one bright box lesion, off-centre."""
    volume = 300 + rng.normal(0, 5, (12, 40, 30))
    mask = np.zeros(volume.shape, dtype=np.uint8)
    mask[3 + shift : 7 + shift, 8:14, 18:24] = 1
    volume[mask == 1] += 600
    return volume, mask


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return (affine @ np.r_[np.argwhere(mask > 0).mean(axis=0), 1.0])[:3]


def test_dicom_series_become_volumes_in_scanner_coordinates(tmp_path: Path) -> None:
    root, rng = tmp_path / "export", np.random.default_rng(0)
    truth = []
    for i in range(3):
        volume, mask = _lesion_volume(rng, shift=i)
        folder = root / f"study-{i}"
        identity = SeriesIdentity(patient_id=f"PATIENT-{i}")
        paths = write_dicom_series(volume, _SPACING, folder, identity, shuffle_names_seed=i)
        write_simulated_lesion_seg(paths, mask, folder / "seg.dcm", f"vol-{i}")
        # The writer puts slice z, row r, column c at LPS (c * 1.5, r * 1.2, z * 2.5) mm.
        slices, rows, cols = np.argwhere(mask > 0).mean(axis=0)
        truth.append(np.array([-cols * _SPACING[2], -rows * _SPACING[1], slices * _SPACING[0]]))
    cache = tmp_path / "cache"
    result = _prepare("--data", str(root), "--out", str(cache), "--task", "segmentation",
                      "--dims", "3", "--spacing", "2.0", "--size", "24")  # fmt: skip
    assert result.exit_code == 0, result.output
    splits = load_dataset(cache)
    assert splits.preprocessing is not None and splits.preprocessing.dims == 3
    parts = [splits.train, splits.val, splits.test]
    assert all(p.images.shape[1:] == (1, 24, 24, 24) for p in parts)
    assert sum(len(p) for p in parts) == 3 and all(p.affines is not None for p in parts)
    for part in parts:  # each image on its mask's grid: the lesion voxels are the bright ones
        assert part.masks is not None
        lesion = part.masks.astype(bool)
        assert (
            np.median(part.images[:, 0][lesion]) > 0.5
        )  # bright lesion (partial volumes at its edge)
    found = []
    for part in parts:
        for mask, affine in zip(part.masks, part.affines, strict=True):  # type: ignore[arg-type]
            assert voxel_spacing(affine) == (2.0, 2.0, 2.0)
            assert mask.sum() > 0
            found.append(_world_centroid(mask, affine))
    # Each lesion lands where the scanner put it, within a voxel (nearest-neighbour masks).
    for centroid in found:
        assert min(np.linalg.norm(centroid - t) for t in truth) < 1.5
    written = (cache / "dataset.npz").read_bytes() + (cache / "manifest.csv").read_bytes()
    assert b"PATIENT-" not in written
    report = json.loads((cache / "qc_report.json").read_text())
    assert report["split_counts"] == {"train": 1, "val": 1, "test": 1}


def test_nifti_cases_become_volumes_with_their_affine(tmp_path: Path) -> None:
    root, rng = tmp_path / "nifti", np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    affine = np.diag([-1.5, 1.2, 2.5, 1.0])
    affine[:3, 3] = (40.0, -20.0, 10.0)
    truth = []
    for i in range(3):
        volume, mask = _lesion_volume(rng, shift=i)
        # NIfTI arrays are (x, y, z)
        nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0).astype(np.float32), affine),
                 root / "images" / f"case-{i}.nii.gz")  # fmt: skip
        xyz = mask.transpose(2, 1, 0)
        nib.save(nib.Nifti1Image(xyz, affine), root / "masks" / f"case-{i}.nii.gz")
        truth.append(_world_centroid(xyz, affine))
    cache = tmp_path / "cache"
    result = _prepare("--data", str(root), "--out", str(cache), "--task", "segmentation",
                      "--dims", "3", "--spacing", "2.0", "--size", "24")  # fmt: skip
    assert result.exit_code == 0, result.output
    splits = load_dataset(cache)
    for part in (splits.train, splits.val, splits.test):
        for mask, vol_affine in zip(part.masks, part.affines, strict=True):  # type: ignore[arg-type]
            assert voxel_spacing(vol_affine) == (2.0, 2.0, 2.0)
            centroid = _world_centroid(mask, vol_affine)
            assert min(np.linalg.norm(centroid - t) for t in truth) < 1.5


def test_volumes_need_a_segmentation_task(tmp_path: Path) -> None:
    result = _prepare("--data", str(tmp_path), "--out", str(tmp_path / "cache"),
                      "--labels", str(tmp_path / "labels.csv"), "--dims", "3")  # fmt: skip
    assert result.exit_code == ExitCode.CONFIG_ERROR, result.output
    assert "--dims" in result.output
