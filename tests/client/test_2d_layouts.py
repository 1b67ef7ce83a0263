"""2D image + mask folders (pictures, 2D NIfTI; images/ + masks/ or dataset.json) and colour.

Real files written by the test: colour PNG fundus-like pictures with a green disc and 0/255
GIF masks, 2D NIfTI images and label maps, a damaged PNG; run through `medfed-site check` and
`prepare`, the reader `medfed-sim run` uses, and `medfed predict`.
"""

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from client.cli import app as site_app
from client.inference.geometry import to_source_size
from client.inference.mask_comparison import compare_with_mask
from client.predict_cli import app as predict_app
from common.checkpoint import save_checkpoint
from common.data.colour import apply_channel_rule
from common.data.loading import load_dataset
from common.data.picture_cases import find_picture_cases, read_picture_file
from common.data.preprocessing_contract import PreprocessingContract, read_contract_beside
from common.data.resampling import resample_masks
from common.errors import DataFormatError
from common.exit_codes import ExitCode
from common.federation_job import FederationJob
from common.models import build_model
from simulations.runner import fit_job_to_data

SIZE = 32


def _disc(rows: int, cols: int, shift: int) -> np.ndarray:
    yy, xx = np.mgrid[:rows, :cols]
    return (yy - rows / 2) ** 2 + (xx - cols / 2 - shift) ** 2 < (rows / 5) ** 2


def _pictures(root: Path, cases: int = 9) -> Path:
    """Colour pictures of several sizes (the disc only in green) and same-named 0/255 GIF masks."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(cases):
        rows, cols = 48 + 2 * i, 56
        disc = _disc(rows, cols, i - 4)
        rgb = rng.integers(20, 60, (rows, cols, 3)).astype(np.uint8)
        rgb[disc, 1] = 220
        Image.fromarray(rgb).save(root / "images" / f"eye{i:02d}.png")
        Image.fromarray((disc * 255).astype(np.uint8)).save(root / "masks" / f"eye{i:02d}.gif")
    return root


def _prepare(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(site_app, ["prepare", *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pictures(tmp_path_factory.mktemp("fundus") / "site")


@pytest.fixture(scope="module")
def rgb_cache(pictures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("rgb") / "cache"
    code, output = _prepare(
        "--data", str(pictures), "--out", str(cache), "--task", "segmentation",
        "--channels", "rgb", "--size", str(SIZE),
    )  # fmt: skip
    assert code == 0, output
    return cache


def test_one_colour_rule_for_grey_and_colour_pixels() -> None:
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 30, 90, 150, 255
    assert apply_channel_rule(rgba, "grey").tolist() == np.full((1, 2, 3), 90.0).tolist()
    assert apply_channel_rule(rgba, "rgb")[:, 0, 0].tolist() == [30, 90, 150]  # alpha dropped
    assert apply_channel_rule(rgba, "g").tolist() == np.full((1, 2, 3), 90.0).tolist()
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(apply_channel_rule(grey, "rgb"), np.stack([grey] * 3))
    assert np.array_equal(apply_channel_rule(grey, "b")[0], grey)
    with pytest.raises(ValueError, match="not one of"):
        apply_channel_rule(grey, "cmyk")


def test_prepare_keeps_rgb_and_records_the_rule(rgb_cache: Path, pictures: Path) -> None:
    data = np.load(rgb_cache / "dataset.npz")
    images = np.concatenate([data[f"{s}_images"] for s in ("train", "val", "test")])
    masks = np.concatenate([data[f"{s}_masks"] for s in ("train", "val", "test")])
    assert images.shape == (9, SIZE, SIZE, 3) and masks.shape == (9, SIZE, SIZE)
    # the disc is bright in green only, and the masks mark it
    inside, outside = images[masks == 1], images[masks == 0]
    assert inside[:, 1].mean() > 200 and inside[:, 0].mean() < 70 and outside[:, 1].mean() < 70
    contract = read_contract_beside(rgb_cache)
    assert contract is not None
    assert (contract.colour, contract.channels, contract.task) == ("rgb", 3, "segmentation")
    splits = load_dataset(rgb_cache)
    assert splits.in_channels == 3 and splits.has_masks


def test_one_channel_is_the_same_channel_of_rgb(
    rgb_cache: Path, pictures: Path, tmp_path: Path
) -> None:
    green = tmp_path / "green"
    code, output = _prepare(
        "--data", str(pictures), "--out", str(green), "--task", "segmentation",
        "--channels", "g", "--size", str(SIZE),
    )  # fmt: skip
    assert code == 0, output
    rgb, g = np.load(rgb_cache / "dataset.npz"), np.load(green / "dataset.npz")
    assert g["train_images"].shape == rgb["train_images"].shape[:3]
    assert np.array_equal(g["train_images"], rgb["train_images"][..., 1])
    contract = read_contract_beside(green)
    assert contract is not None and (contract.colour, contract.channels) == ("g", 1)
    assert contract.differences(read_contract_beside(rgb_cache)) == [
        "channels: expected 1, found 3",
        "colour: expected 'g', found 'rgb'",
    ]


def test_msd_like_2d_nifti_layout_with_named_labels(tmp_path: Path) -> None:
    root = tmp_path / "Task99"
    training = []
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(5):
        disc = _disc(40, 40, i)
        image = (rng.normal(100, 5, (40, 40)) + 80 * disc).astype(np.float32)
        affine = np.diag([0.5, 0.5, 1.0, 1.0])
        # NIfTI arrays are (x, y): the transpose of rows x columns
        nib.save(nib.Nifti1Image(image.T[:, :, None], affine), root / f"imagesTr/c{i}.nii.gz")
        label = disc.astype(np.uint8) * 2  # value 2: the second named structure
        nib.save(nib.Nifti1Image(label.T, affine), root / f"labelsTr/c{i}.nii.gz")
        training.append({"image": f"imagesTr/c{i}.nii.gz", "label": f"labelsTr/c{i}.nii.gz"})
    labels = {"0": "background", "1": "artery", "2": "vein"}
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "training": training}))
    cache = tmp_path / "cache"
    code, output = _prepare(
        "--data", str(root), "--out", str(cache), "--task", "segmentation",
        "--spacing", "1.0", "--size", "32",
    )  # fmt: skip
    assert code == 0, output
    splits = load_dataset(cache)
    assert splits.segment_names == ("background", "artery", "vein")
    masks = np.concatenate([splits.train.masks, splits.val.masks, splits.test.masks])
    # 40 px at 0.5 mm is 20 mm: 20 px at 1 mm, padded to 32; the disc is class 2 only
    assert set(np.unique(masks)) == {0, 2}
    assert not masks[:, :6].any() and not masks[:, -6:].any()
    assert abs(int((masks == 2).sum(axis=(1, 2)).mean()) - np.pi * 4**2) < 15

    # predict replays it on a 2D NIfTI: the mask keeps the input's affine, HD95 is in mm
    job = fit_job_to_data(FederationJob.model_validate({"task": "segmentation"}), splits)
    torch.manual_seed(0)
    model = build_model(job.model, 1, 3, (32, 32), dp_enabled=False)
    checkpoint = save_checkpoint(tmp_path / "grey.pt", model.state_dict(), job, 1, {})
    out = tmp_path / "out"
    image = root / "imagesTr" / "c1.nii.gz"
    args = ["predict", "--model", str(checkpoint), "--input", str(image), "--out", str(out)]
    result = CliRunner().invoke(predict_app, [*args, "--masks", str(root / "labelsTr")])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((out / "summary.json").read_text())["inputs"]
    predicted = nib.load(out / entry["mask_nifti"])
    assert predicted.shape[:2] == (40, 40) and np.allclose(predicted.affine, nib.load(image).affine)
    assert entry["compared_with_mask"]["hd95_unit"] == "mm"
    assert "dice_vein" in entry["compared_with_mask"]["original_resolution"]


def test_msd_like_png_layout_and_labels_csv_classification(tmp_path: Path) -> None:
    root = _pictures(tmp_path / "png", cases=6)
    (root / "imagesTr").symlink_to(root / "images", target_is_directory=True)
    training = [
        {"image": f"imagesTr/eye{i:02d}.png", "label": f"masks/eye{i:02d}.gif"} for i in range(6)
    ]
    (root / "dataset.json").write_text(json.dumps({"training": training}))
    code, output = _prepare("--data", str(root), "--out", str(tmp_path / "msd"), "--size", "16")
    assert code == 0, output
    assert load_dataset(tmp_path / "msd").has_masks

    plain = _pictures(tmp_path / "plain", cases=6)
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\n" + "".join(f"eye{i:02d}.png,{'ab'[i % 2]}\n" for i in range(6)))
    code, output = _prepare(
        "--data", str(plain), "--out", str(tmp_path / "cls"), "--labels", str(csv),
        "--classes", "b,a", "--size", "16",
    )  # fmt: skip
    assert code == 0, output
    splits = load_dataset(tmp_path / "cls")
    assert splits.class_names == ("b", "a") and not splits.has_masks
    total = np.concatenate([splits.train.labels, splits.val.labels, splits.test.labels])
    assert sorted(total.tolist()) == [0, 0, 0, 1, 1, 1]


def test_check_names_damaged_and_mismatched_files(pictures: Path, tmp_path: Path) -> None:
    site = _pictures(tmp_path / "site", cases=4)
    (site / "images" / "eye00.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(site / "masks" / "eye01.gif")
    Image.fromarray(np.full((48 + 4, 56), 7, np.uint8)).save(site / "masks" / "eye02.gif")
    (site / "images" / "notes.txt").write_text("exported by the fundus camera")
    report = tmp_path / "qc.json"
    result = CliRunner().invoke(site_app, ["check", "--data", str(site), "--report", str(report)])
    assert result.exit_code == 0, result.output
    reasons = sorted(s["reason"] for s in json.loads(report.read_text())["skipped_files"])
    assert len(reasons) == 4
    assert reasons[0].startswith("damaged: image not readable (UnidentifiedImageError")
    assert reasons[1].endswith("mask size (5, 5) differs from its image's (50, 56)")
    assert reasons[2].endswith("mask values 7 are not class indices 0..1 nor a binary mask")
    assert reasons[3] == "not an image: .txt is not a picture or NIfTI suffix"
    assert "9 files: 1 images" in result.output


def test_colour_and_spacing_refused_where_they_cannot_apply(pictures: Path, tmp_path: Path) -> None:
    code, output = _prepare(
        "--data", str(pictures), "--out", str(tmp_path / "a"), "--spacing", "0.5",
        "--task", "segmentation",
    )  # fmt: skip
    assert code == ExitCode.CONFIG_ERROR and "pictures store no pixel spacing" in output
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    code, output = _prepare(
        "--data", str(dicom), "--out", str(tmp_path / "b"), "--channels", "rgb",
        "--task", "segmentation",
    )  # fmt: skip
    assert code == ExitCode.CONFIG_ERROR and "only a 2D image folder" in output


def test_a_picture_folder_is_a_dataset_for_medfed_sim(pictures: Path) -> None:
    splits = load_dataset(pictures, image_size=SIZE)
    assert splits.has_masks and splits.in_channels == 1 and splits.image_size == (SIZE, SIZE)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 9
    assert splits.preprocessing is not None and splits.preprocessing.colour == "grey"
    job = fit_job_to_data(FederationJob.model_validate({"task": "segmentation"}), splits)
    assert (job.in_channels, job.num_classes, job.image_size) == (1, 2, SIZE)


def test_predict_replays_the_colour_rule(rgb_cache: Path, pictures: Path, tmp_path: Path) -> None:
    job = fit_job_to_data(
        FederationJob.model_validate({"task": "segmentation"}), load_dataset(rgb_cache)
    )
    torch.manual_seed(0)
    model = build_model(job.model, 3, 2, (SIZE, SIZE), dp_enabled=False)
    checkpoint = save_checkpoint(tmp_path / "rgb.pt", model.state_dict(), job, 1, {})
    out = tmp_path / "out"
    args = ["predict", "--model", str(checkpoint), "--input", str(pictures / "images")]
    args += ["--masks", str(pictures / "masks")]
    result = CliRunner().invoke(predict_app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preprocessing"]["colour"] == "rgb" and len(summary["inputs"]) == 9
    mask = nib.load(out / summary["inputs"][8]["mask_nifti"])
    assert mask.shape[:2] == (56, 64)  # (x, y) of the 64 x 56 source picture
    compared = summary["inputs"][8]["compared_with_mask"]
    assert compared["mask"] == "eye08.gif" and compared["hd95_unit"] == "pixels"
    assert set(compared["original_resolution"]) >= {"dice", "iou", "hd95", "dice_foreground"}
    assert summary["compared_with_masks"]["inputs"] == 9


def test_metrics_at_the_original_resolution_and_in_mm(tmp_path: Path) -> None:
    """A perfect prediction at the model's size is not perfect on the source grid."""
    masks = tmp_path / "masks"
    masks.mkdir()
    truth = np.zeros((50, 60), dtype=np.uint8)
    truth[10:13, 5:55] = 1  # a thin vessel: downsampling loses its edges
    nib.save(nib.Nifti1Image(truth.T, np.diag([0.5, 0.5, 1.0, 1.0])), masks / "v.nii.gz")
    small = resample_masks(truth[None], (0.5, 0.5), None, 16)
    upsampled = to_source_size(small, (50, 60), (0.5, 0.5), None, nearest=True)
    names = ("background", "vessel")
    in_mm = compare_with_mask(masks, "v.png", upsampled, small, (0.5, 0.5), None, names)
    assert in_mm["model_resolution"]["dice"] == 1.0 and in_mm["hd95_unit"] == "mm"
    assert 0.1 < in_mm["original_resolution"]["dice"] < 0.95
    in_pixels = compare_with_mask(masks, "v.png", upsampled, small, None, None, names)
    pixels, mm = in_pixels["original_resolution"]["hd95"], in_mm["original_resolution"]["hd95"]
    assert pixels > 0 and mm == pytest.approx(pixels * 0.5)
    with pytest.raises(DataFormatError, match="no mask named like w.png"):
        compare_with_mask(masks, "w.png", upsampled, small, None, None, names)


def test_a_grey_contract_keeps_the_hash_it_had_before_colour(tmp_path: Path) -> None:
    fields = PreprocessingContract().hashed_fields()
    assert "colour" not in fields
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    old = {**fields, "sha256": hashlib.sha256(canonical.encode()).hexdigest()}
    assert PreprocessingContract.model_validate(old).colour == "grey"
    with pytest.raises(ValueError, match="channels 1 do not match colour 'rgb'"):
        PreprocessingContract.model_validate({"colour": "rgb"})


def test_hostile_headers_and_paths_are_refused_unread(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 1), np.uint8), np.eye(4)), tmp_path / "a.nii")
    header = bytearray((tmp_path / "a.nii").read_bytes())
    header[40:56] = np.array([3, 20000, 20000, 1, 1, 1, 1, 1], "<i2").tobytes()  # dim[]
    (tmp_path / "big.nii").write_bytes(bytes(header))
    with pytest.raises(DataFormatError, match="declares 1526 MiB of pixels, above the 256"):
        read_picture_file(tmp_path / "big.nii")
    site = tmp_path / "site"
    site.mkdir()
    training = [{"image": "../a.nii", "label": None}]
    (site / "dataset.json").write_text(json.dumps({"training": training}))
    with pytest.raises(DataFormatError, match="outside"):
        find_picture_cases(site)
