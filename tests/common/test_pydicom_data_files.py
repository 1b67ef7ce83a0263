"""DICOM reading on pydicom-data's larger sample files (a dev dependency, no download).

tests/common/test_dicom_reading.py covers pydicom's bundled small files; these add what the
pydicom-data wheel makes possible: lossless JPEG 2000, JPEG-LS, RLE and big endian files with
an uncompressed twin to compare against, JPEG lossless process 14 SV1, a Modality LUT Sequence,
RGB / YBR / palette colour, multi-frame files, a truncated JPEG 2000 file and a SEG object.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.data.data_manager import external_data_sources
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from warm_command_lines import run_command_line

from common.data.dicom_pixels import decode_frames
from common.data.dicom_prepare import PreprocessingConfig, read_dicom_folder
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import pseudonymous_path

# pydicom warns when it reads the truncated file (and then returns an empty dataset)
pytestmark = pytest.mark.filterwarnings("ignore:End of file reached before delimiter")

UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
TRUNCATED_J2K = "emri_small_jpeg_2k_lossless_too_short.dcm"


def _testdata(name: str) -> Path:
    """A pydicom-data file; never downloaded (pydicom-data is in the dev extra)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} not found: install the dev extra (pydicom-data==1.0.0)"
    return Path(path)  # type: ignore[arg-type]


def _syntax(path: Path) -> str:
    return pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID


def _pydicom_units(ds: pydicom.Dataset) -> np.ndarray:
    """Modality units [F, H, W] computed by pydicom itself, in medfed's conventions.

    Colour averaged to one channel (palette colour: the colours of its palette); MONOCHROME1
    inverted so that higher means brighter.
    """
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        units = apply_color_lut(ds.pixel_array, ds).astype(np.float64)
    else:
        units = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
    if ds.SamplesPerPixel > 1 or ds.PhotometricInterpretation == "PALETTE COLOR":
        units = units.mean(axis=-1)
    if int(ds.get("NumberOfFrames") or 1) == 1:
        units = units[None]
    if ds.PhotometricInterpretation == "MONOCHROME1":
        units = units.max() - units
    return units


def test_pydicom_finds_the_pydicom_data_files_through_its_entry_point() -> None:
    import data_store  # the pydicom-data wheel's package

    assert "pydicom-data" in external_data_sources()  # entry point pydicom.data.external_sources
    store = Path(data_store.__file__).parent
    for name in ("MR2_J2KR.dcm", TRUNCATED_J2K, "mlut_18.dcm"):
        assert _testdata(name).is_relative_to(store)


# Pairs checked with pydicom first: same pixels, same rescale, same frame count. Left out:
# MR2_UNCI/RG1_UNCI/US1_UNCI (decompressed from the lossy J2KI, not from the original) and
# JPEG-LL vs JPEG2000_UNC (different pixels); OBXXXX1A_expb_2frame (palette colour, big endian):
# pydicom 3.0.2's apply_color_lut gives its palette entries as 255 where the little endian twin's
# are 65280 (0xFF00), a byte order difference in the palette, not in the pixels.
LOSSLESS_PAIRS = [
    # MR, 12 bits in 16, RescaleSlope 3.77: non-integer modality units
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm", JPEG2000Lossless),
    # CR MONOCHROME1 (inverted), 1955x1841, 15 bits stored
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm", JPEG2000Lossless),
    ("RG3_J2KR.dcm", "RG3_UNCR.dcm", JPEG2000Lossless),  # CR MONOCHROME1, 10 bits stored
    # colour: YBR_RCT codestream vs an RGB twin
    ("US1_J2KR.dcm", "US1_UNCR.dcm", JPEG2000Lossless),
    # signed CT, intercept -1024 (HU); the J2K file says 16 bits stored, its twin 14
    ("693_J2KR.dcm", "693_UNCR.dcm", JPEG2000Lossless),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm", JPEG2000Lossless),  # 10 frames
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm", JPEGLSLossless),
    ("emri_small_RLE.dcm", "emri_small.dcm", RLELossless),
    ("emri_small_big_endian.dcm", "emri_small.dcm", ExplicitVRBigEndian),
    ("OBXXXX1A_rle_2frame.dcm", "OBXXXX1A_2frame.dcm", RLELossless),  # 8-bit, 2 frames
    ("SC_rgb_expb_16bit_2frame.dcm", "SC_rgb_16bit_2frame.dcm", ExplicitVRBigEndian),
    ("gdcm-US-ALOKA-16_big.dcm", "gdcm-US-ALOKA-16.dcm", ExplicitVRBigEndian),  # vs implicit
]
PAIR_IDS = [pair[0] for pair in LOSSLESS_PAIRS]


@pytest.mark.parametrize(("name", "twin", "syntax"), LOSSLESS_PAIRS, ids=PAIR_IDS)
def test_lossless_syntax_decodes_to_the_units_of_its_uncompressed_twin(
    name: str, twin: str, syntax: str
) -> None:
    path, twin_path = _testdata(name), _testdata(twin)
    assert _syntax(path) == syntax and _syntax(twin_path) in UNCOMPRESSED
    reference = pydicom.dcmread(twin_path)
    frames = decode_frames(path)
    expected = decode_frames(twin_path)
    count = int(reference.get("NumberOfFrames") or 1)
    assert frames.dtype == np.float32
    assert frames.shape == (count, reference.Rows, reference.Columns)
    assert np.ptp(frames) > 0  # a real image, not a constant that would match anything
    assert np.array_equal(frames, expected)
    # and they are modality units: pydicom's own rescale (float64 here, float32 in medfed)
    assert np.allclose(expected, _pydicom_units(reference), rtol=1e-6, atol=1e-3)


# JPEG lossless process 14 SV1 has no uncompressed twin in pydicom-data: pixels that
# pydicom's own pixel reference tests give for these files (rows 300/600 and 400/600).
SV1_REFERENCE = {
    "JPGLosslessP14SV1_1s_1f_8b.dcm": (
        (768, 1024),
        {
            (300, 512): [26, 26, 25, 22, 19, 16, 14, 15],
            (600, 512): [45, 43, 41, 38, 33, 30, 26, 21],
        },
    ),
    "JPEG-LL.dcm": (  # 16 bits signed, no rescale
        (1024, 256),
        {(400, 124): [60, 58, 61, 68, 59, 65, 64, 67], (600, 124): [3, 1, 2, 0, 2, 1, 2, 0]},
    ),
}


@pytest.mark.parametrize("name", sorted(SV1_REFERENCE))
def test_jpeg_lossless_sv1_decodes_to_the_reference_pixels(name: str) -> None:
    path = _testdata(name)
    assert _syntax(path) == JPEGLosslessSV1
    shape, rows = SV1_REFERENCE[name]
    frames = decode_frames(path)
    assert frames.shape == (1, *shape)
    for (row, column), values in rows.items():
        assert frames[0, row, column : column + 8].tolist() == values


def test_modality_lut_sequence_gives_the_lut_values_not_the_stored_ones() -> None:
    path = _testdata("mlut_18.dcm")
    ds = pydicom.dcmread(path)
    assert "ModalityLUTSequence" in ds and "RescaleSlope" not in ds
    stored = ds.pixel_array
    lut = ds.ModalityLUTSequence[0]
    entries, first_mapped, _ = lut.LUTDescriptor  # 4096 entries from -2048
    table = np.asarray(lut.LUTData)
    assert stored.min() >= first_mapped and stored.max() < first_mapped + entries
    frames = decode_frames(path)
    assert frames.shape == (1, 512, 512)
    assert np.array_equal(frames[0], apply_modality_lut(stored, ds).astype(np.float32))
    assert np.array_equal(frames[0], table[stored.astype(np.int64) - first_mapped])
    assert not np.array_equal(frames[0], stored)  # the LUT really changes the values
    assert (frames.min(), frames.max()) == (0.0, 65535.0)


# SC_rgb*: ten horizontal bands; at column 50 of rows 5, 15, ..., 95 (pydicom's pixel
# reference) the RGB values below, in 8 bits. 16 and 32-bit files hold them times 257 and
# 0x01010101; a second frame is the first inverted (full scale minus each value).
RGB_BANDS = [
    (255, 0, 0), (255, 128, 128), (0, 255, 0), (128, 255, 128), (0, 0, 255),
    (128, 128, 255), (0, 0, 0), (64, 64, 64), (192, 192, 192), (255, 255, 255),
]  # fmt: skip
BAND_ROWS = [5 + 10 * i for i in range(10)]


@pytest.mark.parametrize(
    ("name", "frames", "scale"),
    [("SC_rgb.dcm", 1, 1), ("SC_rgb_expb_2frame.dcm", 2, 1),
     ("SC_rgb_16bit_2frame.dcm", 2, 257), ("SC_rgb_32bit_2frame.dcm", 2, 0x01010101)],
)  # fmt: skip
def test_rgb_becomes_one_grey_channel_per_frame(name: str, frames: int, scale: int) -> None:
    decoded = decode_frames(_testdata(name))
    assert decoded.shape == (frames, 100, 100)  # no colour axis, one image per frame
    grey = np.array([sum(rgb) / 3 * scale for rgb in RGB_BANDS])
    assert decoded[0, BAND_ROWS, 50] == pytest.approx(grey, rel=1e-6)
    if frames == 2:
        assert decoded[1, BAND_ROWS, 50] == pytest.approx(255 * scale - grey, rel=1e-6)


def test_ybr_full_colour_is_converted_to_rgb_before_it_is_averaged() -> None:
    path = _testdata("SC_ybr_full_uncompressed.dcm")
    assert pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation == "YBR_FULL"
    decoded = decode_frames(path)
    # pydicom's reference RGB of this file's bands (YBR_FULL -> RGB rounds a little)
    rgb = [(254, 0, 0), (255, 127, 127), (0, 255, 5), (129, 255, 129), (0, 0, 254),
           (128, 127, 255), (0, 0, 0), (64, 64, 64), (192, 192, 192), (255, 255, 255)]  # fmt: skip
    assert decoded.shape == (1, 100, 100)
    # averaging Y, Cb, Cr instead would give 138.7 for the red band (76, 85, 255)
    assert decoded[0, BAND_ROWS, 50] == pytest.approx([sum(v) / 3 for v in rgb], rel=1e-6)


def test_palette_colour_grey_follows_the_brightness_the_palette_shows() -> None:
    path = _testdata("OBXXXX1A.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    shown = apply_color_lut(ds.pixel_array, ds).astype(np.float64).mean(axis=-1).ravel()
    grey = decode_frames(path)[0].ravel()
    # any monotonic grey mapping: ordering pixels by shown brightness orders their grey too
    order = np.argsort(shown, kind="stable")
    assert np.all(np.diff(grey[order]) >= 0)


# A site export: images in several syntaxes in separate folders, one truncated JPEG 2000
# file, a DICOM SEG object and a file without the DICM preamble.
SITE_IMAGES = {  # relative path: (frames, rows, columns)
    "mr/rle/emri_small_RLE.dcm": (10, 64, 64),
    "ct/jpeg-lossless/bad_sequence.dcm": (1, 512, 512),
    "us/jpeg-lossless/JPGLosslessP14SV1_1s_1f_8b.dcm": (1, 768, 1024),
    "us/j2k/US1_J2KR.dcm": (1, 480, 640),
    "ot/lut/mlut_18.dcm": (1, 512, 512),
    "ot/colour/SC_rgb_expb_16bit_2frame.dcm": (2, 100, 100),
}
SITE_TRUNCATED = f"mr/damaged/{TRUNCATED_J2K}"
SITE_SEG = "seg/liver.dcm"
SITE_NOT_DICOM = "other/OT-PAL-8-face.dcm"


@pytest.fixture
def site_export(tmp_path: Path) -> Path:
    export = tmp_path / "export"
    for relative in [*SITE_IMAGES, SITE_TRUNCATED, SITE_SEG, SITE_NOT_DICOM]:
        target = export / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(_testdata(target.name), target)
    return export


def test_one_pass_read_decodes_the_good_files_and_lists_the_rest(site_export: Path) -> None:
    scan = read_dicom_folder(site_export, PreprocessingConfig())
    reasons = {p.path.as_posix(): p.reason for p in scan.problems}
    assert sorted(reasons) == sorted([SITE_TRUNCATED, SITE_NOT_DICOM])
    assert reasons[SITE_NOT_DICOM].startswith("not a DICOM file")
    assert [p.relative_to(site_export).as_posix() for p in scan.segmentations] == [SITE_SEG]
    slices = [h for s in scan.series.values() for h in s.slices]
    used = {h.path.relative_to(site_export).as_posix(): h for h in slices}
    assert sorted(used) == sorted(SITE_IMAGES)
    for relative, (frames, rows, columns) in SITE_IMAGES.items():
        image = used[relative].image
        assert image is not None and image.taps is not None
        assert (image.frames, image.shape) == (frames, (rows, columns)), relative
    # the Modality LUT file's taps are LUT units (0..65535), not stored ones (-2048..2047)
    lut_taps = used["ot/lut/mlut_18.dcm"].image.taps  # type: ignore[union-attr]
    assert lut_taps.dtype == np.float32 and (lut_taps.min(), lut_taps.max()) == (0.0, 65535.0)
    assert scan.files_seen == len(used) + len(scan.segmentations) + len(scan.problems) == 9


def test_truncated_jpeg2000_file_is_listed_as_undecodable_pixel_data(site_export: Path) -> None:
    scan = read_dicom_folder(site_export, PreprocessingConfig())
    reasons = {p.path.as_posix(): p.reason for p in scan.problems}
    assert reasons[SITE_TRUNCATED] == (
        "damaged: the file ends inside its compressed pixel data (truncated)"
    )


def test_site_check_command_names_each_skipped_file_with_its_reason(
    site_export: Path, tmp_path: Path
) -> None:
    report_path = tmp_path / "qc.json"
    named = SitePseudonymiser.from_key_file(tmp_path / "site-key")
    result = run_command_line(
        "medfed-site", "check", "--data", site_export, "--report", report_path,
        "--key", tmp_path / "site-key", timeout=120, env={"COLUMNS": "200", "PATH": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Skipped files (3)" in result.stdout and TRUNCATED_J2K in result.stdout
    report = json.loads(report_path.read_text())
    skipped = {entry["path"]: entry["reason"] for entry in report["skipped_files"]}
    problems = read_dicom_folder(site_export, PreprocessingConfig(), keep_pixels=False).problems
    expected = {SITE_TRUNCATED, SITE_NOT_DICOM, SITE_SEG}
    assert {pseudonymous_path(p, named) for p in expected} == set(skipped)
    for problem in problems:  # the command reports what the reading API found, word for word
        assert skipped[pseudonymous_path(problem.path.as_posix(), named)] == problem.reason
    assert skipped[pseudonymous_path(SITE_SEG, named)].startswith("DICOM SEG")
    assert report["files_seen"] == 9
    assert report["images_per_modality"] == {"MR": 10, "CT": 1, "US": 2, "OT": 3}
