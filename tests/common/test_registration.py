"""Registration and multi-sequence prepare on generated studies whose true transforms are known."""

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from common.data.atlas import atlas_image
from common.data.dicom_prepare import PreprocessingConfig
from common.data.dicom_scan import scan_dicom_folder
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import QualityReport
from common.data.registered_prepare import RegistrationOptions, prepare_registered
from common.data.sequences import group_by_sequence, parse_sequences
from common.data.series_volume import VolumeReader, series_volume
from common.data.study_alignment import align_study
from simulations.brain_sequences import TRUTH_FILE, write_sequence_sites

RULE = parse_sequences("T1=t1*,T2=*T2")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sequences")
    return write_sequence_sites(out, ("T1", "T2"), sites=1, subjects_per_site=4, seed=3)[0]


def _rewrite(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)


def test_registration_error_is_below_one_output_voxel(site: Path) -> None:
    truth = json.loads((site / TRUTH_FILE).read_text())["subjects"]["subject-03"]
    scan = scan_dicom_folder(site / "dicom" / "subject-03", read_image=VolumeReader())
    (study,) = group_by_sequence(scan.series.values(), RULE)
    images = [series_volume(study.series[n][0], None).image for n in RULE.names]
    alignments = align_study(images, atlas_image(), "affine")
    # points in the brain, on the atlas: where does each series' alignment send them?
    points = np.array(
        [[x, y, z] for x in (-40, 0, 40) for y in (-60, -20, 20) for z in (0, 30)], dtype=float
    )
    for name, alignment in zip(RULE.names, alignments, strict=True):
        to_template = np.asarray(truth[name])
        mapped = np.array([alignment.transform.TransformPoint(tuple(p)) for p in points])
        moved = (to_template @ np.c_[mapped, np.ones(len(points))].T).T[:, :3]
        error = np.linalg.norm(moved - points, axis=1)
        start = (to_template @ np.c_[points, np.ones(len(points))].T).T[:, :3]
        assert np.linalg.norm(start - points, axis=1).mean() > 2.0  # misaligned to begin with
        assert error.max() < 2.0, (name, error)  # < 1 voxel of a 2 mm output grid


def test_bad_studies_are_named_with_their_reason_and_nothing_else_is_lost(
    site: Path, tmp_path: Path
) -> None:
    data = tmp_path / "dicom"
    shutil.copytree(site / "dicom", data)
    shutil.rmtree(data / "subject-00" / "T2")  # a missing sequence

    def far_away(ds: pydicom.Dataset) -> None:  # no overlap with T1: cannot be registered
        ds.ImagePositionPatient = [float(v) + 600.0 for v in ds.ImagePositionPatient]

    def cropped(ds: pydicom.Dataset) -> None:  # a different size (and origin) than T1
        pixels = ds.pixel_array[6:-4, 5:-3].copy()
        step = [float(v) for v in ds.PixelSpacing]
        origin = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [origin[0] + 5 * step[1], origin[1] + 6 * step[0], origin[2]]
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.tobytes()

    _rewrite(data / "subject-01" / "T2", far_away)
    _rewrite(data / "subject-02" / "T2", cropped)
    scan = scan_dicom_folder(data, read_image=VolumeReader())
    report = QualityReport()
    key = SitePseudonymiser(b"k" * 32)
    manifest_free = PreprocessingConfig(target_spacing=3.0, size=48)
    options = RegistrationOptions("none", "rigid", None, RULE)
    studies = {s.slices[0].path.parent.parent.name: key(s.study_uid) for s in scan.series.values()}
    prepared = prepare_registered(
        scan, manifest_free, options, None, key, report, segmentations=None
    )
    reasons = {entry["key"]: entry["reason"] for entry in report.excluded}
    assert reasons[studies["subject-00"]] == "study without sequence T2 (--sequences)"
    assert "registration failed" in reasons[studies["subject-01"]]
    assert set(reasons) == {studies["subject-00"], studies["subject-01"]}
    failed = [r for r in report.registration if r.get("status") == "failed"]
    assert len(failed) == 1 and failed[0]["sequence"] == "T2"
    noted = [r for r in report.registration if "note" in r]
    assert [r["sequence"] for r in noted] == ["T2"]  # subject-02: resampled, kept
    # unlabelled (no manifest), but both usable studies were aligned and sliced, 2 channels
    assert report.unlabelled_series == 2 and report.unlabelled_images > 80
    assert prepared.labels == []
