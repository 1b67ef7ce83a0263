from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from common.data.dicom_image import ImageReducer, stored_stats
from common.data.dicom_pixels import StoredFrames, decode_frames, frames_from_dataset
from common.data.dicom_prepare import PreprocessingConfig, prepare_series, read_dicom_folder
from common.data.dicom_scan import scan_dicom_folder
from common.data.intensity import normalise_intensity
from common.data.label_manifest import LabelManifest
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import QualityReport
from common.data.resample_taps import plan_resampling
from common.data.resampling import resample_images
from common.data.value_histogram import ValueHistogram
from simulations.dicom_writer import SeriesIdentity, write_dicom_series

PYDICOM_FILES = Path(get_testdata_file("CT_small.dcm")).parent


def test_slices_are_ordered_by_position_not_file_name(tmp_path: Path) -> None:
    volume = np.arange(6)[:, None, None] * 100.0 + np.zeros((6, 8, 8))
    write_dicom_series(
        volume, (2.5, 1.0, 1.0), tmp_path / "a" / "b", SeriesIdentity(), shuffle_names_seed=3
    )
    scan = scan_dicom_folder(tmp_path)
    (series,) = scan.series.values()
    firsts = [decode_frames(s.path)[0, 0, 0] for s in series.slices]
    assert firsts == [0.0, 100.0, 200.0, 300.0, 400.0, 500.0]
    assert np.allclose(series.slice_gaps(), 2.5)


def test_series_are_grouped_across_folders_and_ct_is_in_hounsfield_units(tmp_path: Path) -> None:
    ct = SeriesIdentity(modality="CT")
    write_dicom_series(
        np.full((3, 8, 8), 1000.0), (1, 1, 1), tmp_path / "x", ct, rescale=(1.0, -1024.0)
    )
    write_dicom_series(np.full((2, 8, 8), 50.0), (1, 1, 1), tmp_path / "y" / "z", SeriesIdentity())
    scan = scan_dicom_folder(tmp_path)
    assert sorted(len(s.slices) for s in scan.series.values()) == [2, 3]
    assert decode_frames(scan.series[ct.series_uid].slices[0].path)[0, 0, 0] == -24.0


def test_pydicom_sample_files_each_get_a_clear_outcome() -> None:
    scan = scan_dicom_folder(PYDICOM_FILES)
    reasons = {p.path.as_posix(): p.reason for p in scan.problems}
    assert reasons["README.txt"].startswith("not a DICOM file")
    assert reasons["rtplan.dcm"] == "not an image: RT Plan Storage"
    assert "badVR.dcm" in reasons  # bad value representation: listed, not a crash
    used = {h.path.name for s in scan.series.values() for h in s.slices}
    # nothing vanishes: every file is an image, a segmentation object or a listed problem
    assert scan.files_seen == len(used) + len(scan.segmentations) + len(scan.problems)


def test_one_pass_read_accounts_for_every_file_and_names_undecodable_ones() -> None:
    scan = read_dicom_folder(PYDICOM_FILES, PreprocessingConfig())
    reasons = {p.path.as_posix(): p.reason for p in scan.problems}
    assert reasons["MR_truncated.dcm"].startswith(
        "damaged: pixel data shorter than its header declares"
    )
    used = [h for s in scan.series.values() for h in s.slices]
    assert all(h.image is not None and h.sop_instance_uid for h in used)
    assert scan.files_seen == len(used) + len(scan.segmentations) + len(scan.problems)


def test_prepare_reads_each_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ct = SeriesIdentity(modality="CT")
    write_dicom_series(
        np.full((4, 16, 16), 1000.0), (1, 1, 1), tmp_path, ct, rescale=(1.0, -1024.0)
    )
    opened: list[str] = []
    real_dcmread = pydicom.dcmread

    def dcmread(source, **kw):  # a path, or the file the scan opened
        opened.append(str(getattr(source, "name", source)))
        return real_dcmread(source, **kw)

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    config = PreprocessingConfig(size=8)
    scan = read_dicom_folder(tmp_path, config)
    manifest = LabelManifest("SeriesInstanceUID", {ct.series_uid: "a"}, ("a",))
    prepared = prepare_series(scan, config, manifest, SitePseudonymiser(b"k" * 32), QualityReport())
    assert sorted(opened) == sorted(str(p) for p in tmp_path.rglob("*.dcm"))
    assert len(prepared.images) == 4 and prepared.images[0].shape == (8, 8)
    assert np.allclose(prepared.images, 0.34)  # -24 HU in the soft-tissue window (-160, 240)


def test_an_image_of_another_size_is_listed_when_checking_too(tmp_path: Path) -> None:
    identity = SeriesIdentity()
    write_dicom_series(np.full((3, 8, 8), 50.0), (1, 1, 1), tmp_path / "a", identity)
    write_dicom_series(np.full((1, 6, 6), 50.0), (1, 1, 1), tmp_path / "b", identity)
    report = QualityReport()
    scan = read_dicom_folder(tmp_path, PreprocessingConfig(), keep_pixels=False)
    prepare_series(scan, PreprocessingConfig(), None, SitePseudonymiser(b"k" * 32), report, False)
    assert [f["reason"] for f in report.skipped_files] == [
        "image size differs from the rest of its series"
    ]
    assert report.images_per_modality == {"MR": 3}


def test_truncated_pixel_data_raises_for_that_file_only() -> None:
    with pytest.raises(ValueError, match="less than expected"):
        decode_frames(PYDICOM_FILES / "MR_truncated.dcm")


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
     "MR_small_bigendian.dcm", "MR_small_implicit.dcm"],
)  # fmt: skip
def test_lossless_transfer_syntaxes_decode_to_the_same_pixels(name: str) -> None:
    reference = decode_frames(PYDICOM_FILES / "MR_small.dcm")
    assert np.array_equal(decode_frames(PYDICOM_FILES / name), reference)


def test_multiframe_file_gives_one_image_per_frame() -> None:
    frames = decode_frames(PYDICOM_FILES / "SC_rgb_rle_2frame.dcm")
    assert frames.shape[0] == 2 and frames.ndim == 3


def test_windowing_presets_and_percentiles() -> None:
    hounsfield = np.array([[-1350.0, -600.0, 150.0, 3000.0]])
    assert normalise_intensity(hounsfield, "lung").tolist() == [[0.0, 0.5, 1.0, 1.0]]
    ramp = np.arange(1000, dtype=np.float32).reshape(10, 100)
    scaled = normalise_intensity(ramp, "percentile")
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    with pytest.raises(ValueError, match="unknown window 'liver'"):
        normalise_intensity(ramp, "liver")


def test_resampling_keeps_physical_size() -> None:
    image = np.zeros((40, 40), dtype=np.float32)
    image[10:30, 10:30] = 1.0  # a 20-pixel square at 0.5 mm = 10 mm
    out = resample_images(image[None], (0.5, 0.5), 1.0, 32)[0]  # 1 mm pixels, padded to 32
    assert out.shape == (32, 32)
    assert (out > 0.5).sum() == pytest.approx(100, abs=12)  # 10 mm x 10 mm = ~100 pixels


def test_units_of_a_pixel_subset_match_the_whole_frame_even_inverted() -> None:
    stored = np.random.default_rng(0).integers(0, 4000, (2, 16, 16)).astype(np.uint16)
    frames = StoredFrames(stored, slope=-2.0, intercept=100.0, lut_source=None, invert=True)
    whole = stored.astype(np.float32) * -2.0 + 100.0
    whole = whole.max() - whole  # MONOCHROME1: higher means brighter
    assert np.array_equal(frames.units(), whole)
    assert np.array_equal(frames.units(stored[:, 2:5, 7:9]), whole[:, 2:5, 7:9])
    stats = stored_stats(stored.astype(np.float32), frames.linear_units)
    assert (stats.minimum, stats.maximum) == (whole.min(), whole.max())


def test_taps_kept_as_stored_integers_give_the_units_of_the_whole_frame(tmp_path: Path) -> None:
    volume = np.random.default_rng(2).integers(0, 4000, (2, 40, 30))
    paths = write_dicom_series(volume, (1, 1, 1), tmp_path, SeriesIdentity(), (0.5, -1024.0))
    inverted = pydicom.dcmread(paths[1])
    inverted.PhotometricInterpretation = "MONOCHROME1"
    plan = plan_resampling((40, 30), None, None, 16)
    for ds in (pydicom.dcmread(paths[0]), inverted):
        image = ImageReducer(None, 16)(ds, None)
        assert image.taps is not None and image.taps.dtype == np.uint16  # half of float32
        units = image.units.apply(image.taps.astype(np.float32))
        assert np.array_equal(units, plan.gather(frames_from_dataset(ds)))


def test_statistics_from_stored_values_match_the_units() -> None:
    stored = np.random.default_rng(3).integers(0, 4000, (3, 32, 32)).astype(np.int16)
    frames = StoredFrames(stored, slope=-2.0, intercept=100.0, lut_source=None, invert=True)
    taps = plan_resampling((32, 32), None, None, 8).gather(stored)  # what prepare measures
    sample = frames.units(taps).astype(np.float64)
    stats = stored_stats(taps.astype(np.float32), frames.linear_units).as_dict()
    assert stats["mean"] == pytest.approx(sample.mean(), rel=1e-6)
    assert stats["std"] == pytest.approx(sample.std(), rel=1e-5)
    assert (stats["min"], stats["max"]) == (sample.min(), sample.max())


@pytest.mark.parametrize(
    ("modality", "rescale", "window"),
    [("CT", (1.0, -1024.0), "soft-tissue"), ("MR", (0.5, 10.0), "percentile")],
)
def test_prepared_images_equal_windowing_then_monai_resampling(
    tmp_path: Path, modality: str, rescale: tuple[float, float], window: str
) -> None:
    """The one-pass prepare (taps, fused window, histogram percentiles) against the plain path:
    decode whole frames to units, window them, resample with MONAI."""
    volume = np.random.default_rng(4).integers(0, 2400, (5, 40, 30))
    identity = SeriesIdentity(modality=modality)
    write_dicom_series(volume, (2.0, 0.8, 0.8), tmp_path, identity, rescale, shuffle_names_seed=1)
    config = PreprocessingConfig(target_spacing=1.0, size=32)
    scan = read_dicom_folder(tmp_path, config)
    manifest = LabelManifest("SeriesInstanceUID", {identity.series_uid: "a"}, ("a",))
    prepared = prepare_series(scan, config, manifest, SitePseudonymiser(b"k" * 32), QualityReport())

    (series,) = scan.series.values()
    units = np.concatenate([decode_frames(s.path) for s in series.slices])
    if window == "percentile":  # over the pixels resampling reads, as documented
        taps = plan_resampling((40, 30), (0.8, 0.8), 1.0, 32).gather(units)
        low, high = np.percentile(taps, (0.5, 99.5))
        windowed = np.clip((units - low) / (high - low), 0, 1)
    else:
        windowed = normalise_intensity(units, window)
    expected = resample_images(windowed.astype(np.float32), (0.8, 0.8), 1.0, 32)
    assert config.window_for(modality) == window
    assert np.ptp(expected) > 0.5  # a real image, not a constant
    assert np.allclose(np.stack(prepared.images), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("dtype", "low", "high", "size"),
    [
        (np.uint16, 0, 4000, 655_360),  # a series of MR taps
        (np.int16, -1024, 3000, 1001),  # signed CT values
        (np.uint16, 60_000, 60_100, 7),  # far from 0: counted from the minimum
        (np.uint8, 0, 256, 2),
        (np.int8, -100, 100, 300),
        (np.int16, -32768, -30000, 300),  # differences that only fit 16 bits unsigned
        (np.uint16, 0, 65536, 500),  # wider than 2**15: numpy's bincount
        (np.int32, -5, 5, 50),
        (np.uint16, 5, 6, 1),
    ],
)
def test_value_histogram_percentiles_and_moments_equal_numpys(dtype, low, high, size) -> None:
    values = np.random.default_rng(size).integers(low, high, size).astype(dtype)
    histogram = ValueHistogram.of(values)
    assert histogram is not None
    percentiles = (0.0, 0.5, 37.3, 50.0, 99.5, 100.0)
    expected = np.percentile(values, percentiles)
    assert histogram.percentiles(percentiles) == pytest.approx(expected, rel=1e-12)
    exact = values.astype(np.float64)
    count, total, total_sq, minimum, maximum = histogram.moments()
    assert (count, minimum, maximum) == (size, exact.min(), exact.max())
    assert (total, total_sq) == (exact.sum(), (exact**2).sum())


def test_value_histogram_leaves_floats_and_wide_ranges_to_numpy() -> None:
    assert ValueHistogram.of(np.array([0.5, 1.5], dtype=np.float32)) is None
    assert ValueHistogram.of(np.array([0, 1 << 24], dtype=np.int32)) is None


def test_prepare_and_check_report_the_same_intensity_statistics(tmp_path: Path) -> None:
    """Statistics come per series from the kept taps (prepare) or per file (check); unlabelled
    images count in both."""
    rng = np.random.default_rng(5)
    labelled, unlabelled = SeriesIdentity(modality="CT"), SeriesIdentity(modality="CT")
    for identity, rescale in ((labelled, (1.0, -1024.0)), (unlabelled, (2.0, -2048.0))):
        volume = rng.integers(0, 3000, (3, 24, 24))
        write_dicom_series(volume, (1, 1, 1), tmp_path / identity.series_uid, identity, rescale)
    manifest = LabelManifest("SeriesInstanceUID", {labelled.series_uid: "a"}, ("a",))
    config = PreprocessingConfig(size=8)
    reports = []
    for keep_pixels in (True, False):
        report = QualityReport()
        scan = read_dicom_folder(tmp_path, config, keep_pixels=keep_pixels)
        key = SitePseudonymiser(b"k" * 32)
        prepare_series(scan, config, manifest, key, report, keep_pixels=keep_pixels)
        reports.append(report.intensity["CT"].as_dict())
    prepared, checked = reports
    assert prepared == pytest.approx(checked, rel=1e-6)
    units = np.concatenate([decode_frames(p) for p in sorted(tmp_path.rglob("*.dcm"))])
    taps = plan_resampling((24, 24), None, None, 8).gather(units).astype(np.float64)
    assert prepared["mean"] == pytest.approx(taps.mean(), rel=1e-6)  # both series counted
    assert (prepared["min"], prepared["max"]) == (taps.min(), taps.max())
