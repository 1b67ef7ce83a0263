"""2D predictions stacked on a prepared volume's grid and scored with the volume metrics."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from client.cli import app
from common.data.arrays import ImageArrays
from common.data.loading import load_dataset
from common.errors import ConfigError
from common.tasks.slice_stacking import (
    check_same_preprocessing,
    predict_by_slices,
    stack_slices,
    volume_slices,
)
from common.tasks.volume_metrics import volume_metrics
from common.tasks.volume_segmentation import volume_spacings
from simulations.dicom_writer import SeriesIdentity, write_dicom_series
from simulations.seg_writer import write_simulated_lesion_seg

#: Source voxels (slice, row, column) at the target spacing: the volume's slices are the
#: source slices (only padded), so each must equal one slice that 2D prepare wrote.
_SPACING = (2.0, 2.0, 2.0)
_OPTIONS = ("--task", "segmentation", "--spacing", "2.0", "--size", "24")


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three DICOM series with a DICOM SEG, prepared once as slices and once as volumes."""
    root, rng = tmp_path_factory.mktemp("export"), np.random.default_rng(0)
    for i in range(3):
        # rows != columns and an off-centre lesion: a swapped axis cannot go unnoticed
        volume = 300 + rng.normal(0, 40, (10, 28, 20))
        mask = np.zeros(volume.shape, dtype=np.uint8)
        mask[2 + i : 6 + i, 4:9, 12:17] = 1
        volume[mask == 1] += 600
        folder = root / f"study-{i}"
        paths = write_dicom_series(
            volume, _SPACING, folder, SeriesIdentity(patient_id=f"P-{i}"), shuffle_names_seed=i
        )
        write_simulated_lesion_seg(paths, mask, folder / "seg.dcm", f"vol-{i}")
    out = tmp_path_factory.mktemp("caches")
    for name, dims in (("slices", "2"), ("volumes", "3")):
        args = ["prepare", "--data", str(root), "--out", str(out / name), "--dims", dims]
        result = CliRunner().invoke(app, [*args, *_OPTIONS])
        assert result.exit_code == 0, result.output
    return out / "slices", out / "volumes"


def _all(path: Path) -> tuple[ImageArrays, ...]:
    splits = load_dataset(path)
    return splits.train, splits.val, splits.test


def test_volume_slices_are_the_images_2d_prepare_wrote_and_their_masks_stack_back(
    caches: tuple[Path, Path],
) -> None:
    slices = _all(caches[0])
    images = np.concatenate([part.images for part in slices])  # [S, 1, Y, X]
    masks = np.concatenate([part.masks for part in slices])  # [S, Y, X]
    for part in _all(caches[1]):
        assert part.masks is not None
        for volume, truth in zip(part.images, part.masks, strict=True):
            axial = volume_slices(volume)  # [Z, 1, Y, X]
            matched = []
            for image in axial[axial.reshape(len(axial), -1).std(axis=1) > 0]:
                gaps = np.abs(images - image).reshape(len(images), -1).max(axis=1)
                assert gaps.min() < 1e-3  # the same pixels, in the same orientation
                matched.append(int(gaps.argmin()))
            assert len(matched) == 10  # every source slice found (the rest is padding)
            # the 2D masks of those slices, stacked, are the volume's mask: a perfect 2D model
            # scores Dice 1 with the volume metrics
            signal = np.flatnonzero(axial.reshape(len(axial), -1).std(axis=1) > 0)
            stacked = np.zeros_like(truth)
            stacked[..., signal] = stack_slices(masks[matched])
            assert np.array_equal(stacked, truth)
            spacing = np.array([[2.0, 2.0, 2.0]])
            scores = volume_metrics(truth[None], stacked[None], spacing, ("background", "lesion"))
            assert scores["dice"] == pytest.approx(1.0) and scores["hd95_mm"] == 0.0
            assert scores["lesions_found"] == 1 and scores["lesions_false"] == 0


def test_a_2d_network_labels_every_voxel_where_its_slice_pixel_came_from(
    caches: tuple[Path, Path],
) -> None:
    """A real 1x1 convolution that labels pixels above 0.5: its stacked labels must be the
    thresholded volume voxel for voxel, and score as that thresholded volume does."""
    threshold = nn.Conv2d(1, 2, kernel_size=1)
    assert threshold.bias is not None
    with torch.no_grad():
        threshold.weight.copy_(torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1))
        threshold.bias.copy_(torch.tensor([0.5, -0.5]))
    test = load_dataset(caches[1]).test
    assert test.masks is not None and len(test) >= 1
    predicted = predict_by_slices(threshold, test.images, batch_size=7)
    expected = (test.images[:, 0] > 0.5).astype(np.uint8)
    assert predicted.dtype == np.uint8 and np.array_equal(predicted, expected)
    names = ("background", "lesion")
    scores = volume_metrics(test.masks, predicted, volume_spacings(test), names)
    assert scores == volume_metrics(test.masks, expected, np.full((len(test), 3), 2.0), names)
    assert scores["dice"] == pytest.approx(1.0)  # the lesion is all that is above 0.5


def test_a_2d_model_prepared_otherwise_than_the_volumes_is_refused_naming_the_field(
    caches: tuple[Path, Path],
) -> None:
    flat = load_dataset(caches[0]).preprocessing
    volumes = load_dataset(caches[1]).preprocessing
    assert flat is not None and volumes is not None
    check_same_preprocessing(flat, volumes)  # the same prepare options but --dims
    coarser = volumes.model_copy(update={"spacing_mm": 3.0, "sha256": ""})
    with pytest.raises(ConfigError, match=r"spacing_mm = 2.0 \(2D model\) vs 3.0 \(volumes\)"):
        check_same_preprocessing(flat, coarser)
    with pytest.raises(ConfigError, match="need a 2D model"):
        check_same_preprocessing(volumes, volumes)
