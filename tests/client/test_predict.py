"""`medfed predict`: DICOM SEG, NIfTI masks, CSV scores and Grad-CAM overlays on real files."""

import csv
import json
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner
from warm_command_lines import run_command_line

from client.inference.geometry import to_source_size
from client.inference.model import load_trained_model
from client.inference.saliency import Saliency, last_feature_layer
from client.predict_cli import app
from common.checkpoint import save_checkpoint
from common.data.resampling import resample_images
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks.segmentation import DiceCrossEntropy
from simulations.dicom_writer import SeriesIdentity, write_dicom_series

SIZE = 32
SECRET_NAME = "Secretname^Predict"


# --- models -------------------------------------------------------------------------------


def _blobs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 1, SIZE, SIZE] in [0, 1] (varied background, some with a bright disc), masks."""
    images = np.empty((n, 1, SIZE, SIZE), np.float32)
    masks = np.zeros((n, SIZE, SIZE), np.int64)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(n):
        images[i] = rng.uniform(0.0, 0.3) + rng.normal(0, 0.04, (SIZE, SIZE))
        if rng.random() < 0.6:
            cy, cx = rng.integers(8, SIZE - 8, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(3, 7) ** 2
            images[i, 0][disc] = rng.uniform(0.6, 1.0)
            masks[i][disc] = 1
    return np.clip(images, 0, 1), masks


def _train(model: torch.nn.Module, loss_fn: torch.nn.Module, steps: int, task: str) -> None:
    rng = np.random.default_rng(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        images, masks = _blobs(rng, 8)
        target = masks if task == "segmentation" else masks.reshape(8, -1).max(1)
        optimiser.zero_grad()
        loss_fn(model(torch.from_numpy(images)), torch.from_numpy(target)).backward()
        optimiser.step()
    model.eval()


def _checkpoint(path: Path, task: str, steps: int, empty: bool = False) -> Path:
    torch.manual_seed(0)
    names = "background,lesion" if task == "segmentation" else ""
    raw = {"task": task, "image_size": SIZE, "class_names": names}
    job = FederationJob.model_validate(raw)
    model = build_model(job.model, 1, 2, (SIZE, SIZE), dp_enabled=False)
    if task == "segmentation":
        _train(model, DiceCrossEntropy(), steps, task)
    else:
        _train(model, torch.nn.CrossEntropyLoss(), steps, task)
    if empty:  # predicts background everywhere, whatever the image
        with torch.no_grad():
            model.final_conv.weight.zero_()
            model.final_conv.bias.copy_(torch.tensor([5.0, -5.0]))
    return save_checkpoint(path, model.state_dict(), job, 3, {"dice": 0.9})


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "seg": _checkpoint(root / "seg.pt", "segmentation", 40),
        "empty": _checkpoint(root / "empty.pt", "segmentation", 0, empty=True),
        "cls": _checkpoint(root / "cls.pt", "classification", 40),
    }


# --- inputs -------------------------------------------------------------------------------


def _volume(slices: int, rows: int, cols: int, blob_slices: range, seed: int) -> np.ndarray:
    """Stored MR values: noise around 100, a bright disc (300) on ``blob_slices``."""
    rng = np.random.default_rng(seed)
    volume = 100 + rng.normal(0, 5, (slices, rows, cols))
    yy, xx = np.mgrid[:rows, :cols]
    disc = (yy - rows // 2) ** 2 + (xx - cols // 2) ** 2 <= (min(rows, cols) // 5) ** 2
    for z in blob_slices:
        volume[z][disc] = 300
    return volume


def _series(folder: Path, volume: np.ndarray, modality: str = "MR", seed: int | None = None):
    identity = SeriesIdentity(patient_name=SECRET_NAME, modality=modality)
    paths = write_dicom_series(volume, (3.0, 0.8, 0.8), folder, identity, shuffle_names_seed=seed)
    return identity, paths


def _uids(paths: list[Path]) -> list[str]:
    return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]


@pytest.fixture
def dicom_export(tmp_path: Path) -> dict:
    """Two MR series in nested folders (one with a truncated slice), and a README."""
    export = tmp_path / "export"
    lesion_volume = _volume(6, 40, 36, range(2, 4), seed=1)
    a_identity, a_paths = _series(export / "patientA" / "study" / "series", lesion_volume)
    b_identity, b_paths = _series(
        export / "patientB" / "study" / "series", _volume(5, 32, 32, range(0), 2), seed=3
    )
    broken = b_paths[1]
    b_uids = _uids(b_paths)
    broken.write_bytes(broken.read_bytes()[:-700])
    (export / "README.txt").write_text("exported by PACS")
    return {
        "root": export,
        "a_identity": a_identity,
        "a_uids": _uids(a_paths),
        "a_volume": lesion_volume,
        "b_identity": b_identity,
        "b_kept_uids": [u for u, p in zip(b_uids, b_paths, strict=True) if p != broken],
        "broken": broken.relative_to(export).as_posix(),
    }


def _medfed(*args: str) -> subprocess.CompletedProcess[str]:
    return run_command_line("medfed", *args, timeout=300)


def _frame_sources(seg: hd.seg.Segmentation) -> list[str]:
    return [
        str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for item in seg.PerFrameFunctionalGroupsSequence
    ]


def _referenced(seg: hd.seg.Segmentation) -> tuple[str, set[str]]:
    (series,) = seg.ReferencedSeriesSequence
    uids = {str(item.ReferencedSOPInstanceUID) for item in series.ReferencedInstanceSequence}
    return str(series.SeriesInstanceUID), uids


# --- tests --------------------------------------------------------------------------------


def test_segmentation_of_a_dicom_folder_through_the_medfed_command(
    models: dict[str, Path], dicom_export: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _medfed(
        "predict", "--model", str(models["seg"]), "--input", str(dicom_export["root"]),
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    entries = {e["input"]: e for e in summary["inputs"]}
    assert set(entries) == {"patientA/study/series", "patientB/study/series"}
    skipped = {s["input"]: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == {"README.txt", dicom_export["broken"]}
    assert skipped[dicom_export["broken"]].startswith("damaged: pixel data shorter than")

    # Series A: the SEG references exactly its slices, one frame per slice, in its geometry.
    a = entries["patientA/study/series"]
    seg = hd.seg.segread(out / a["dicom_seg"])
    assert seg.Modality == "SEG" and seg.PatientName == SECRET_NAME  # copied, as a SEG must
    series_uid, referenced = _referenced(seg)
    assert series_uid == dicom_export["a_identity"].series_uid
    assert referenced == set(dicom_export["a_uids"])
    frame_sources = _frame_sources(seg)
    assert sorted(frame_sources) == sorted(dicom_export["a_uids"])
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["lesion"]
    frames = seg.pixel_array.reshape(len(frame_sources), 40, 36)
    by_slice = {uid: frames[frame_sources.index(uid)] for uid in dicom_export["a_uids"]}
    truth = dicom_export["a_volume"] > 200
    for z, uid in enumerate(dicom_export["a_uids"]):
        overlap = np.logical_and(by_slice[uid] > 0, truth[z]).sum()
        union = np.logical_or(by_slice[uid] > 0, truth[z]).sum()
        assert (overlap / union > 0.5) if truth[z].any() else union == 0, z

    # The NIfTI mask: the series' slice count and shape, its spacing, the same voxels.
    nifti = nib.load(out / a["mask_nifti"])
    assert nifti.shape == (36, 40, 6)
    assert nifti.header.get_zooms() == pytest.approx((0.8, 0.8, 3.0))
    mask = np.asarray(nifti.dataobj).transpose(2, 1, 0)
    assert np.array_equal(mask > 0, np.stack([by_slice[u] > 0 for u in dicom_export["a_uids"]]))
    assert a["slices_with_foreground"] == 2
    overlay = np.asarray(Image.open(out / a["overlays"][2]))
    assert overlay.shape == (40, 36, 3) and len(a["overlays"]) == 6

    # Series B: the SEG references the decodable slices only; nothing was found in it.
    b = entries["patientB/study/series"]
    seg_b = hd.seg.segread(out / b["dicom_seg"])
    assert _referenced(seg_b) == (
        dicom_export["b_identity"].series_uid,
        set(dicom_export["b_kept_uids"]),
    )
    assert b["images"] == 4

    # Nothing from the DICOM headers is printed or named in the plain outputs.
    secrets = [SECRET_NAME, dicom_export["a_identity"].series_uid, *dicom_export["a_uids"]]
    texts = result.stdout + result.stderr + (out / "summary.json").read_text()
    assert not [s for s in secrets if s in texts]


def test_an_empty_prediction_still_makes_a_valid_seg(
    models: dict[str, Path], dicom_export: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    series = dicom_export["root"] / "patientA" / "study" / "series"
    result = CliRunner().invoke(
        app,
        ["predict", "--model", str(models["empty"]), "--input", str(series), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((out / "summary.json").read_text())["inputs"]
    assert entry["foreground_pixels"] == {"lesion": 0}
    assert any("no foreground" in note for note in entry["notes"])
    seg = hd.seg.segread(out / entry["dicom_seg"])
    assert int(seg.NumberOfFrames) == 6 and not seg.pixel_array.any()
    assert _referenced(seg)[1] == set(dicom_export["a_uids"])
    assert np.asarray(nib.load(out / entry["mask_nifti"]).dataobj).shape == (36, 40, 6)

    one_file = sorted(series.iterdir())[0]
    result = CliRunner().invoke(
        app,
        ["predict", "--model", str(models["empty"]), "--input", str(one_file), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((out / "summary.json").read_text())["inputs"]
    assert entry["input"] == one_file.name
    seg = hd.seg.segread(out / entry["dicom_seg"])
    assert _referenced(seg)[1] == set(_uids([one_file]))


def test_nifti_segmentation_keeps_the_volume_shape_and_affine(
    models: dict[str, Path], tmp_path: Path
) -> None:
    volume = _volume(7, 36, 40, range(3, 5), seed=4).transpose(2, 1, 0)  # (x, y, z)
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    source = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), source)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["predict", "--model", str(models["seg"]), "--input", str(source), "--out", str(out),
         "--spacing", "0.7"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((out / "summary.json").read_text())["inputs"]
    assert "dicom_seg" not in entry
    mask = nib.load(out / entry["mask_nifti"])
    assert mask.shape == volume.shape and np.allclose(mask.affine, affine)
    found = [int(np.asarray(mask.dataobj)[..., z].sum()) for z in range(7)]
    assert [count > 20 for count in found] == [z in (3, 4) for z in range(7)], found


def test_classification_of_a_mixed_folder_with_bad_files(
    models: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "inputs"
    identity, _ = _series(root / "ct", _volume(4, 32, 32, range(1, 3), seed=5) + 1000, "CT")
    picture = np.clip(_volume(1, 40, 48, range(1), seed=6)[0] * 0.6, 0, 255).astype(np.uint8)
    Image.fromarray(picture).save(root / "xray.png")
    nib.save(
        nib.Nifti1Image(_volume(3, 24, 24, range(1), 7).transpose(2, 1, 0), np.eye(4)),
        root / "mr.nii.gz",
    )
    (root / "bad.png").write_bytes(b"not a png at all")
    (root / "broken.nii.gz").write_bytes(b"not gzip")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["predict", "--model", str(models["cls"]), "--input", str(root), "--out", str(out),
         "--ct-window", "brain"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert {e["input"] for e in summary["inputs"]} == {"ct", "xray.png", "mr.nii.gz"}
    skipped = {s["input"]: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == {"bad.png", "broken.nii.gz"}

    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["input", "slice", "frame", "p_0", "p_1", "predicted"]
    assert len(rows) == 4 + 1 + 3
    assert {r["input"] for r in rows} >= {"xray.png", "mr.nii.gz"}
    assert all(r["input"].startswith("ct/IM") for r in rows if r["input"].startswith("ct"))
    assert identity.series_uid not in (out / "predictions.csv").read_text()
    for row in rows:
        assert float(row["p_0"]) + float(row["p_1"]) == pytest.approx(1.0, abs=1e-5)

    (xray,) = [e for e in summary["inputs"] if e["input"] == "xray.png"]
    overlay = np.asarray(Image.open(out / xray["saliency_overlays"][0]))
    assert overlay.shape == (40, 48, 3)
    ct = next(e for e in summary["inputs"] if e["input"] == "ct")
    assert len(ct["saliency_overlays"]) == 4


def test_grad_cam_has_the_input_shape_and_is_not_flat(models: dict[str, Path]) -> None:
    model = load_trained_model(models["cls"])
    assert last_feature_layer(model.network, 1, SIZE) == "net"
    image = np.full((1, 40, 48), 0.1, np.float32)
    image[0, 14:26, 18:30] = 0.9
    batch = resample_images(image, None, None, SIZE)[:, None]
    with torch.no_grad():
        predicted = model.network(torch.from_numpy(batch)).argmax(1).numpy()
    assert predicted.tolist() == [1]
    maps = Saliency(model.network, 1, SIZE)(batch, predicted)
    heat = to_source_size(maps, (40, 48), None, None, nearest=False)[0]
    assert heat.shape == (40, 48) and heat.std() > 0.05


@pytest.mark.parametrize("name, layer", [("cnn", "net"), ("resnet18", "layer4")])
def test_grad_cam_layer_is_found_by_name(name: str, layer: str) -> None:
    job = FederationJob.model_validate({"model": {"name": name}})
    network = build_model(job.model, 1, 2, (SIZE, SIZE), dp_enabled=False)
    assert last_feature_layer(network, 1, SIZE) == layer


@pytest.mark.parametrize("target", [0.5, 2.0])
def test_masks_go_back_to_the_source_grid(target: float) -> None:
    """Forward resampling (crop when zooming in, pad when zooming out), then back: same mask."""
    mask = np.zeros((1, 40, 36), np.float32)
    mask[0, 12:22, 10:20] = 1
    small = (resample_images(mask, (0.8, 0.8), target, SIZE) > 0.5).astype(np.uint8)
    back = to_source_size(small, (40, 36), (0.8, 0.8), target, nearest=True)
    assert back.shape == (1, 40, 36)
    agreement = np.logical_and(back > 0, mask > 0).sum() / np.logical_or(back > 0, mask > 0).sum()
    assert agreement > 0.8


def test_unreadable_input_and_bad_options_are_clear_errors(
    models: dict[str, Path], tmp_path: Path
) -> None:
    junk = tmp_path / "scan.dcm"
    junk.write_bytes(b"\x00" * 300)
    runner = CliRunner()
    common = ["predict", "--model", str(models["seg"]), "--out", str(tmp_path / "out")]
    result = runner.invoke(app, [*common, "--input", str(junk)])
    assert result.exit_code == 3 and "scan.dcm" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, [*common, "--input", str(tmp_path), "--window", "sharp"])
    assert result.exit_code == 2 and "--window" in result.output
    result = runner.invoke(app, [*common[:2], str(junk), *common[3:], "--input", str(tmp_path)])
    assert result.exit_code == 3 and "not a medfed checkpoint" in result.output


def _predicted(out: Path) -> tuple[np.ndarray, list[str]]:
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return np.array([float(r["p_1"]) for r in rows]), [r["predicted"] for r in rows]


def test_classification_decides_at_the_threshold_stored_in_the_checkpoint(
    models: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "inputs"
    _series(root / "mr", _volume(6, 32, 32, range(1, 4), seed=8))
    plain = tmp_path / "argmax"
    result = CliRunner().invoke(
        app, ["predict", "--model", str(models["cls"]), "--input", str(root), "--out", str(plain)]
    )
    assert result.exit_code == 0, result.output
    assert "decision: argmax (the checkpoint stores no decision threshold)" in result.output
    scores, by_argmax = _predicted(plain)
    assert by_argmax == ["1" if p > 0.5 else "0" for p in scores]
    # a threshold that moves at least one image across, whichever side of 0.5 they lie, and
    # clear of the CSV's 6-decimal rounding
    below = scores[scores < 0.5]
    if len(below):
        threshold = float(max(below.min() - 1e-4, below.min() / 2))
    else:
        threshold = float(min(scores.max() + 1e-4, 0.9999))
    payload = torch.load(models["cls"], weights_only=True)
    job = FederationJob.model_validate(payload["job"])
    stored = save_checkpoint(
        tmp_path / "thresholded.pt", payload["state_dict"], job, 5, {"threshold": threshold}
    )
    out = tmp_path / "thresholded"
    result = CliRunner().invoke(
        app, ["predict", "--model", str(stored), "--input", str(root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"decision: 1 when p_1 >= {threshold:.4f} (the threshold stored" in result.output
    again, decided = _predicted(out)
    np.testing.assert_allclose(again, scores, atol=1e-6)
    assert decided == ["1" if p >= threshold else "0" for p in scores]
    assert decided != by_argmax
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decision"]["rule"] == "threshold"
    assert summary["decision"]["threshold"] == pytest.approx(threshold)
    counts = summary["inputs"][0]["predicted"]
    assert counts == {"0": decided.count("0"), "1": decided.count("1")}

    broken = save_checkpoint(
        tmp_path / "broken.pt", payload["state_dict"], job, 5, {"threshold": 1.5}
    )
    result = CliRunner().invoke(
        app, ["predict", "--model", str(broken), "--input", str(root), "--out", str(tmp_path / "b")]
    )
    assert result.exit_code != 0
    assert "broken.pt" in result.output and "threshold 1.5" in result.output
