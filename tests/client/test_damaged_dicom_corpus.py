"""A corpus of damaged DICOM files generated from pydicom's real sample files: every file is
either decoded exactly as its original or listed with a reason that says it is damaged, and a
real `medfed-site check` over the corpus prints no traceback and counts that agree."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator, read_preamble
from warm_command_lines import run_command_line

from common.data.dicom_image import ImageReducer
from common.data.dicom_pixels import frames_from_dataset
from common.data.dicom_scan import scan_dicom_folder

#: Native CT and MR, JPEG 2000 lossless and RLE lossless (one file each).
SOURCES = ("CT_small.dcm", "MR_small.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm")
_TRUNCATIONS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def _element_headers(raw: bytes) -> list[tuple[int, int, int, int]]:
    """(tag, start of the element's header, of its length field, of its value) per element."""
    handle = DicomBytesIO(raw)
    read_preamble(handle, False)
    meta = pydicom.filereader._read_file_meta_info(handle)  # noqa: SLF001 - test of structure
    implicit = meta.TransferSyntaxUID.is_implicit_VR
    found = []
    for element in data_element_generator(handle, implicit, True, defer_size=1):
        long_length = implicit or element.VR in ("OB", "OW", "SQ", "UN", "UT", "OF", "OD", "UC")
        header = 8 if implicit or not long_length else 12
        length_size = 4 if long_length else 2
        start = element.value_tell - header
        found.append((element.tag, start, element.value_tell - length_size, element.value_tell))
    return found


def _flip(raw: bytes, position: int) -> bytes:
    data = bytearray(raw)
    data[position] ^= 0xFF
    return bytes(data)


def _codestream_offsets(raw: bytes) -> dict[str, int]:
    """Offsets in the file of JPEG 2000 marker fields (SIZ Xsiz, a segment length, Psot, EOC)."""
    soc = raw.index(b"\xff\x4f\xff\x51")
    sot = raw.index(b"\xff\x90", soc)
    eoc = raw.rindex(b"\xff\xd9")
    return {"siz_width": soc + 10, "siz_length": soc + 4, "psot": sot + 8, "eoc": eoc + 1}


def build_corpus(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Write the damaged variants; returns {file: source} for those that must be detected or
    decode exactly, and {file: source} for value changes no reader can detect."""
    folder.mkdir(parents=True)
    structural: dict[str, str] = {}
    values: dict[str, str] = {}
    for source in SOURCES:
        raw = Path(get_testdata_file(source)).read_bytes()
        stem = Path(source).stem
        variants = {f"trunc{int(f * 100):02d}.dcm": raw[: int(len(raw) * f)] for f in _TRUNCATIONS}
        headers = _element_headers(raw)
        pixel_value = next(value for tag, _, _, value in headers if tag == 0x7FE00010)
        variants |= {
            "trunc_last_byte.dcm": raw[:-1],
            "trunc_in_pixel_header.dcm": raw[: pixel_value - 2],
            "zero_length.dcm": b"",
            "preamble_only.dcm": raw[:132],
            "meta_only.dcm": raw[: headers[0][1]],
            "as_text.txt": raw,  # wrong extension: read by content, not by name
            "as_jpeg.jpg": raw,
        }
        picks = np.linspace(1, len(headers) - 1, 5).astype(int)  # spread over the header
        for i in picks:
            _, start, length_at, _ = headers[i]
            variants[f"length_flip_{i}.dcm"] = _flip(raw, length_at + 1)
            variants[f"tag_flip_{i}.dcm"] = _flip(raw, start + 1)
        if "jp2k" in stem:
            for field, offset in _codestream_offsets(raw).items():
                variants[f"j2k_{field}.dcm"] = _flip(raw, offset)
        if "RLE" in stem:  # RLE header: segment count, first segment offset
            rle = raw.index(b"\xfe\xff\x00\xe0", pixel_value + 8) + 8
            variants |= {"rle_count.dcm": _flip(raw, rle), "rle_offset.dcm": _flip(raw, rle + 4)}
        for key, data in variants.items():
            (folder / f"{stem}_{key}").write_bytes(data)
            structural[f"{stem}_{key}"] = source
        rng = np.random.default_rng(len(stem))
        for i, position in enumerate(rng.integers(pixel_value + 64, len(raw) - 64, 2)):
            (folder / f"{stem}_pixel_value_flip{i}.dcm").write_bytes(_flip(raw, int(position)))
            values[f"{stem}_pixel_value_flip{i}.dcm"] = source
    return structural, values


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], dict[str, str]]:
    folder = tmp_path_factory.mktemp("corpus") / "export"
    structural, values = build_corpus(folder)
    return folder, structural, values


def _units(path: Path) -> np.ndarray:
    return frames_from_dataset(pydicom.dcmread(path))


def test_every_damaged_file_is_named_damaged_or_decodes_exactly(corpus) -> None:
    folder, structural, values = corpus
    assert len(structural) >= 50
    scan = scan_dicom_folder(folder, read_image=ImageReducer(None, 64, keep_pixels=False))
    reasons = {p.path.name: p.reason for p in scan.problems}
    used = {h.path.name for s in scan.series.values() for h in s.slices}
    assert set(reasons) | used == set(structural) | set(values)
    originals = {s: _units(Path(get_testdata_file(s))) for s in SOURCES}
    for name, source in structural.items():
        if name in reasons:
            assert reasons[name].startswith("damaged: "), (name, reasons[name])
            assert "Rows element" not in reasons[name]
        else:
            assert np.array_equal(_units(folder / name), originals[source]), name
    # A changed byte inside pixel values (native, RLE literal run, JPEG 2000 entropy-coded
    # data) carries no checksum: no reader can tell it. It must not crash or go unnamed.
    for name, source in values.items():
        assert name in used or reasons[name].startswith("damaged: "), name
        if name in used:
            assert _units(folder / name).shape == originals[source].shape
    detected = sum(name in reasons for name in structural)
    print(f"{len(structural)} structural variants: {detected} named damaged, rest exact")


def test_check_over_the_corpus_prints_no_traceback_and_consistent_counts(
    corpus, tmp_path: Path
) -> None:
    folder, structural, values = corpus
    report = tmp_path / "qc.json"
    result = run_command_line(
        "medfed-site", "check", "--data", folder, "--report", report,
        timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    console = result.stdout + result.stderr
    assert result.returncode == 0, console
    assert "Traceback" not in console
    assert "Warning" not in console and "ERROR" not in console
    assert str(folder) not in result.stderr  # pydicom's warnings name the absolute path
    data = json.loads(report.read_text())
    skipped = len(data["skipped_files"])
    images = sum(data["images_per_modality"].values())
    assert data["files_seen"] == len(structural) + len(values)
    assert f"Skipped files ({skipped}), grouped by reason" in result.stdout
    series = sum(data["series_per_modality"].values())
    summary = f"{data['files_seen']} files: {images} images in {series} series read, {skipped}"
    assert summary in result.stdout
    rows = re.findall(r"^\S\s+(\d+) \S ", result.stdout, flags=re.MULTILINE)
    assert sum(int(n) for n in rows) == skipped  # the grouped table counts every skipped file
    assert all(not r["reason"].endswith(("(", ":")) for r in data["skipped_files"])
