"""`prepare` for classification of aligned studies without a labels CSV: the SEG masks label slices.

Real generated T1 DICOM studies with a DICOM SEG each, prepared by `medfed-site prepare`
through its command line, once for segmentation (masks kept) and once for classification; the
classification cache must hold the same slices and labels, minus the slivers under
``--min-label-area``, and no masks. One sequence, so that nothing is registered (SimpleITK's
multi-threaded registration differs in the last grey level from run to run) and the test is fast.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from client.cli import app as site_app
from common.data.preprocessing_contract import read_contract_beside
from simulations.brain_sequences import write_sequence_sites

_SPACING = 6.0
_COMMON = ("--spacing", str(_SPACING), "--size", "32", "--register", "none",
           "--sequences", "T1=T1")  # fmt: skip


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four T1 studies with their lesion SEG (a split needs 3 patients)."""
    out = tmp_path_factory.mktemp("mask-labels")
    return write_sequence_sites(out, ("T1",), sites=1, subjects_per_site=4, seed=4)[0]


def _prepare(data: Path, out: Path, *args: str) -> np.lib.npyio.NpzFile:
    result = CliRunner().invoke(
        site_app, ["prepare", "--data", str(data), "--out", str(out), *_COMMON, *args]
    )
    assert result.exit_code == 0, result.output
    return np.load(out / "dataset.npz")


def _all(cache: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    return np.concatenate([cache[f"{split}_{key}"] for split in ("train", "val", "test")])


def test_masks_label_the_slices_and_slivers_are_left_out(studies: Path, tmp_path: Path) -> None:
    data = studies / "dicom"
    segmentation = _prepare(data, tmp_path / "seg", "--task", "segmentation")
    any_voxel = _prepare(data, tmp_path / "any")
    area = _prepare(data, tmp_path / "area", "--min-label-area", "150")

    masks = _all(segmentation, "masks")
    pixels = masks.reshape(len(masks), -1).astype(bool).sum(1)
    assert (pixels > 0).any() and (pixels == 0).any()
    # Without an area every slice is kept, labelled as the segmentation cache labels it.
    assert np.array_equal(_all(any_voxel, "labels"), _all(segmentation, "labels"))
    assert np.array_equal(_all(any_voxel, "images"), _all(segmentation, "images"))
    assert not any(key.endswith("_masks") for key in any_voxel.files)
    contract = read_contract_beside(tmp_path / "any" / "dataset.npz")
    assert contract is not None and contract.task == "classification"
    assert contract.class_names == "no-lesion,lesion" and contract.segment_names == ""
    assert contract.channels == 1 and contract.channel_names == "T1"
    # 150 mm^2 is 4.2 pixels of 6 mm: slices with 1-4 lesion pixels are slivers, left out.
    slivers = (pixels > 0) & (pixels * _SPACING**2 < 150)
    assert slivers.any() and (pixels * _SPACING**2 >= 150).any()
    assert np.array_equal(_all(area, "labels"), _all(segmentation, "labels")[~slivers])
    assert np.array_equal(_all(area, "images"), _all(segmentation, "images")[~slivers])
    report = json.loads((tmp_path / "area" / "qc_report.json").read_text())
    assert report["unlabelled"]["images"] == int(slivers.sum())


def test_min_label_area_is_refused_where_masks_do_not_label(studies: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        site_app,
        ["prepare", "--data", str(studies / "dicom"), "--out", str(tmp_path / "x"), *_COMMON,
         "--task", "segmentation", "--min-label-area", "100"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "--min-label-area" in result.output
