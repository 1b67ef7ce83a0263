import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.data.dicom_scan import scan_dicom_folder
from simulations.brain_lesions import MIN_LESION_VOXELS, slice_label, write_brain_lesion_sites


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_brain_lesion_sites(tmp_path_factory.mktemp("brain"), sites=2, subjects_per_site=2)


def test_each_site_is_real_dicom_with_a_label_per_slice(two_sites: list[Path]) -> None:
    for site in two_sites:
        scan = scan_dicom_folder(site / "dicom")
        assert scan.problems == [] and len(scan.series) == 2
        files = {
            h.path.relative_to(site / "dicom").as_posix()
            for s in scan.series.values()
            for h in s.slices
        }
        with (site / "labels.csv").open() as handle:
            rows = {row["file"]: row["label"] for row in csv.DictReader(handle)}
        assert set(rows) <= files  # slivers of a tumour are left unlabelled
        assert len(rows) >= 0.9 * len(files)
        assert set(rows.values()) == {"lesion", "no-lesion"}


def test_slice_labels_follow_the_lesion_masks(two_sites: list[Path]) -> None:
    site = two_sites[0]
    scan = scan_dicom_folder(site / "dicom")
    with (site / "labels.csv").open() as handle:
        rows = {row["file"]: row["label"] for row in csv.DictReader(handle)}
    for series in scan.series.values():
        subject = series.slices[0].path.parent.name
        mask = np.asarray(nib.load(site / "masks" / f"{subject}.nii.gz").dataobj).transpose(2, 1, 0)
        for index, header in enumerate(series.slices):  # ordered along z, as the mask
            voxels = int(mask[index].sum())
            expected = (
                "lesion" if voxels >= MIN_LESION_VOXELS else "no-lesion" if not voxels else None
            )
            assert rows.get(header.path.relative_to(site / "dicom").as_posix()) == expected
    slivers = [slice_label(n) for n in (0, 1, MIN_LESION_VOXELS - 1, MIN_LESION_VOXELS)]
    assert slivers == ["no-lesion", None, None, "lesion"]


def test_sites_have_different_scanners(two_sites: list[Path]) -> None:
    spacing = [
        next(iter(scan_dicom_folder(s / "dicom").series.values())).pixel_spacing for s in two_sites
    ]
    assert spacing[0] != spacing[1]


def test_same_seed_same_labels(two_sites: list[Path], tmp_path: Path) -> None:
    again = write_brain_lesion_sites(tmp_path, sites=1, subjects_per_site=2)
    assert (again[0] / "labels.csv").read_text() == (two_sites[0] / "labels.csv").read_text()


def _labels_in_z_order(site: Path) -> dict[str, list[str]]:
    """Each subject's slice labels, ordered along z."""
    with (site / "labels.csv").open() as handle:
        rows = {row["file"]: row["label"] for row in csv.DictReader(handle)}
    return {
        series.slices[0].path.parent.name: [
            rows.get(h.path.relative_to(site / "dicom").as_posix(), "sliver") for h in series.slices
        ]
        for series in scan_dicom_folder(site / "dicom").series.values()
    }


def test_a_few_slices_per_subject_are_a_contiguous_run_of_the_same_subject(
    two_sites: list[Path], tmp_path: Path
) -> None:
    few = write_brain_lesion_sites(tmp_path, sites=1, subjects_per_site=2, slices_per_subject=5)
    full, kept = _labels_in_z_order(two_sites[0]), _labels_in_z_order(few[0])
    assert set(kept) == set(full)
    for subject, labels in kept.items():
        assert len(labels) == 5
        runs = [full[subject][k : k + 5] for k in range(len(full[subject]) - 4)]
        assert labels in runs  # the same subject (same seed), cut to 5 adjacent slices
    assert nib.load(few[0] / "masks" / "subject-00.nii.gz").shape[2] == 5
