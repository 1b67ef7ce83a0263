"""`medfed-site prepare --task segmentation`: masks from DICOM SEG and NIfTI, kept in the cache."""

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from warm_command_lines import run_command_line

from common.data.loading import load_dataset
from common.data.npz_reader import read_npz
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import pseudonymous_path
from common.errors import DataFormatError
from simulations.dicom_writer import SeriesIdentity, write_dicom_series
from simulations.seg_writer import write_simulated_lesion_seg


def _prepare(*args: str) -> subprocess.CompletedProcess[str]:
    return run_command_line("medfed-site", "prepare", *args, timeout=300)


@pytest.fixture
def export_with_seg(tmp_path: Path) -> Path:
    """Four MR series of 6 slices (file names shuffled); three carry a DICOM SEG of their
    bright squares, one has none; plus a damaged SEG file."""
    root = tmp_path / "export"
    rng = np.random.default_rng(0)
    for i in range(4):
        volume = 300 + rng.normal(0, 5, (6, 32, 32))  # kept at 32 x 32: no interpolation
        mask = np.zeros(volume.shape, dtype=np.uint8)
        for z in range(1 + i % 2, 4):  # lesions on 2-3 consecutive slices, moving across
            mask[z, 10 + 4 * z : 18 + 4 * z, 20:30] = 1
        volume[mask == 1] += 600
        folder = root / f"study-{i}"
        paths = write_dicom_series(
            volume,
            (3.0, 1.0, 1.0),
            folder,
            SeriesIdentity(patient_id=f"P{i}"),
            shuffle_names_seed=i,
        )
        if i < 3:
            write_simulated_lesion_seg(paths, mask, folder / "seg.dcm", f"test-{i}")
    (root / "study-0" / "broken-seg.dcm").write_bytes(
        (root / "study-0" / "seg.dcm").read_bytes()[:2000]
    )
    return root


def test_dicom_seg_masks_land_on_their_own_slices(export_with_seg: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = _prepare("--data", str(export_with_seg), "--out", str(cache), "--size", "32",
                      "--task", "segmentation")  # fmt: skip
    assert result.returncode == 0, result.stderr
    splits = load_dataset(cache)
    assert splits.has_masks and splits.segment_names == ("background", "lesion")
    parts = (splits.train, splits.val, splits.test)
    images = np.concatenate([p.images[:, 0] for p in parts])
    masks = np.concatenate([p.masks for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    assert len(masks) == 18  # three segmented series of 6 slices; the fourth is unlabelled
    assert labels.tolist() == masks.any(axis=(1, 2)).astype(int).tolist()
    assert labels.sum() == 3 + 2 + 3
    # each mask covers the bright square of its own slice (files were named out of order)
    assert images[masks == 1].min() > images[masks == 0].max()
    report = json.loads((cache / "qc_report.json").read_text())
    reasons = _reasons_by_path(report, cache)
    assert reasons["study-0/broken-seg.dcm"].startswith("DICOM SEG not readable")
    assert report["unlabelled"] == {"images": 6, "series": 1}
    assert report["segmentation_objects"] == 3


def _reasons_by_path(report: dict, cache: Path) -> dict[str, str]:
    """Reasons by real path: the report names files by pseudonyms under the cache's key."""
    named = SitePseudonymiser.from_key_file(cache / ".site-key")
    real = {
        pseudonymous_path(f"study-{i}/{name}", named): f"study-{i}/{name}"
        for i in range(4)
        for name in ("broken-seg.dcm", "seg.dcm")
    }
    return {real.get(s["path"], s["path"]): s["reason"] for s in report["skipped_files"]}


def test_classification_prepare_lists_the_seg_objects_it_does_not_use(
    export_with_seg: Path, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.csv"
    rows = [f"study-{i}/{p.name},{i % 2}" for i in range(4)
            for p in sorted((export_with_seg / f"study-{i}").glob("IM*.dcm"))]  # fmt: skip
    labels.write_text("file,label\n" + "\n".join(rows) + "\n")
    result = _prepare("--data", str(export_with_seg), "--out", str(tmp_path / "cache"),
                      "--labels", str(labels), "--size", "32")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "cache" / "qc_report.json").read_text())
    reasons = _reasons_by_path(report, tmp_path / "cache")
    assert {f"study-{i}/seg.dcm" for i in range(3)} <= set(reasons)
    assert "segmentation task" in reasons["study-1/seg.dcm"]


def test_segmentation_without_any_seg_object_is_refused(tmp_path: Path) -> None:
    write_dicom_series(np.full((3, 32, 32), 100.0), (1, 1, 1), tmp_path / "x", SeriesIdentity())
    result = _prepare("--data", str(tmp_path / "x"), "--out", str(tmp_path / "cache"),
                      "--task", "segmentation")  # fmt: skip
    assert result.returncode != 0
    assert "no DICOM SEG object among 3 files" in result.stderr


def test_msd_masks_are_resampled_with_the_images(tmp_path: Path) -> None:
    root = tmp_path / "Task09"
    training = []
    for i in range(3):
        volume = np.full((32, 32, 4), 100.0, dtype=np.float32)  # (x, y, z), kept at 32 x 32
        mask = np.zeros(volume.shape, dtype=np.uint8)
        mask[8:20, 20:30, 1] = 1
        mask[24:30, 4:10, 2] = 2
        volume[mask > 0] = 400.0
        for kind, array in (("imagesTr", volume), ("labelsTr", mask)):
            (root / kind).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 3.0, 1.0])),
                     root / kind / f"case_{i}.nii.gz")  # fmt: skip
        training.append(
            {"image": f"imagesTr/case_{i}.nii.gz", "label": f"labelsTr/case_{i}.nii.gz"}
        )
    labels = {"0": "background", "1": "tumour", "2": "oedema"}
    (root / "dataset.json").write_text(json.dumps({"training": training, "labels": labels}))
    result = _prepare("--data", str(root), "--out", str(tmp_path / "cache"), "--size", "32")
    assert result.returncode == 0, result.stderr
    splits = load_dataset(tmp_path / "cache")
    assert splits.segment_names == ("background", "tumour", "oedema")
    masks = np.concatenate([p.masks for p in (splits.train, splits.val, splits.test)])
    images = np.concatenate([p.images[:, 0] for p in (splits.train, splits.val, splits.test)])
    assert set(np.unique(masks)) == {0, 1, 2}
    assert np.all(images[masks > 0] > 0.5) and np.all(images[masks == 0] < 0.5)


def test_npz_masks_must_cover_every_split_and_fit_the_segment_names(tmp_path: Path) -> None:
    arrays = {f"{s}_{k}": np.zeros((2, 8, 8) if k == "images" else (2,), np.uint8)
              for s in ("train", "val", "test") for k in ("images", "labels")}  # fmt: skip
    np.savez(tmp_path / "partial.npz", **arrays, train_masks=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataFormatError, match="masks must be given for all of train, val and test"):
        read_npz(tmp_path / "partial.npz")
    masks = {f"{s}_masks": np.full((2, 8, 8), 2, np.uint8) for s in ("train", "val", "test")}
    np.savez(tmp_path / "values.npz", **arrays, **masks)  # unnamed: named by their values
    assert read_npz(tmp_path / "values.npz").segment_names == ("background", "1", "2")
    names = np.array(["background", "vessel"])
    np.savez(tmp_path / "names.npz", **arrays, **masks, segment_names=names)
    with pytest.raises(DataFormatError, match="masks hold class 2 but segment_names has only"):
        read_npz(tmp_path / "names.npz")
