"""Class and segment names come from the data (--segments, dataset.json, mask values), never a
default "lesion" for another structure: real `medfed-site prepare` runs on written pictures."""

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from client.cli import app as site_app
from common.data.arrays import ImageArrays
from common.data.loading import load_dataset
from common.data.npz_reader import read_npz
from common.data.npz_writer import write_npz
from common.data.preprocessing_contract import read_contract_beside


def _vessel_pictures(root: Path, cases: int = 6) -> Path:
    """Grey pictures with a bright vertical band ("vessel") and same-named 0/255 PNG masks."""
    rng = np.random.default_rng(3)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(cases):
        band = np.zeros((40, 40), dtype=bool)
        if i % 3:  # a third of the pictures have no vessel at all
            band[:, 10 + i : 14 + i] = True
        picture = rng.integers(10, 40, (40, 40)).astype(np.uint8)
        picture[band] = 200
        Image.fromarray(picture).save(root / "images" / f"fundus{i}.png")
        Image.fromarray((band * 255).astype(np.uint8)).save(root / "masks" / f"fundus{i}.png")
    return root


def _prepare(data: Path, out: Path, *extra: str) -> str:
    args = ["prepare", "--data", str(data), "--out", str(out), "--task", "segmentation"]
    result = CliRunner().invoke(site_app, [*args, "--size", "16", *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_segments_name_the_mask_and_its_image_classes(tmp_path: Path) -> None:
    pictures = _vessel_pictures(tmp_path / "site")
    cache = tmp_path / "cache"
    output = _prepare(pictures, cache, "--segments", "background,vessel")
    assert "no-vessel 2, vessel 4" in output and "lesion" not in output
    splits = load_dataset(cache)
    assert splits.segment_names == ("background", "vessel")
    assert splits.class_names == ("no-vessel", "vessel")
    report = json.loads((cache / "qc_report.json").read_text())
    assert report["class_counts"] == {"no-vessel": 2, "vessel": 4}
    contract = read_contract_beside(cache)
    assert contract is not None and "lesion" not in contract.model_dump_json()


def test_unnamed_masks_are_foreground_never_lesion(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    output = _prepare(_vessel_pictures(tmp_path / "site"), cache)
    assert "no-foreground 2, foreground 4" in output and "lesion" not in output
    splits = load_dataset(cache)
    assert splits.segment_names == ("background", "foreground")
    assert "lesion" not in (cache / "qc_report.json").read_text()


def test_an_archive_names_unnamed_mask_values_by_value(tmp_path: Path) -> None:
    masks = np.zeros((4, 8, 8), dtype=np.uint8)
    masks[1, :2] = 1
    masks[2, :2] = 2  # three mask values and no segment_names: named 'background', '1', '2'
    part = ImageArrays(
        images=np.zeros((4, 1, 8, 8), np.float32), labels=np.array([0, 1, 1, 0]), masks=masks
    )
    path = write_npz(tmp_path / "d.npz", {"train": part, "val": part, "test": part}, ("a", "b"))
    assert read_npz(path).segment_names == ("background", "1", "2")
