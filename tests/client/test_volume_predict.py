"""`medfed predict` with a 3D model: sliding windows over a volume, its mask on the input grid."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from typer.testing import CliRunner

from client.predict_cli import app
from common.checkpoint import save_checkpoint
from common.data.dicom_geometry import dicom_affine
from common.data.dicom_prepare import PreprocessingConfig
from common.data.dicom_scan import SliceHeader
from common.data.resampling import resample_masks
from common.data.volume_prepare import series_volume
from common.data.volumes import to_source_grid
from common.federation_job import FederationJob
from common.models import build_model
from simulations.dicom_writer import SeriesIdentity, write_dicom_series

SIZE = 32


def _everywhere_lesion(path: Path) -> Path:
    """A 3D BasicUNet whose last layer says 'lesion' at every voxel, as a medfed checkpoint."""
    job = FederationJob.model_validate(
        {"task": "segmentation-3d", "image_size": SIZE, "class_names": "background,lesion",
         "model": {"name": "basicunet", "norm": "instance"}}
    )  # fmt: skip
    model = build_model(job.model, 1, 2, job.spatial_shape, dp_enabled=False)
    with torch.no_grad():
        model.final_conv.weight.zero_()
        model.final_conv.bias.copy_(torch.tensor([-5.0, 5.0]))
    return save_checkpoint(path, model.state_dict(), job, 1, {})


def test_a_volume_mask_goes_back_onto_its_source_slices() -> None:
    rows, cols, slices = 50, 44, 9
    mask = np.zeros((slices, rows, cols), dtype=np.uint8)
    mask[3:6, 20:32, 10:24] = 1
    headers = [
        SliceHeader(Path(f"{z}.dcm"), (5.0, -3.0, 2.5 * z), (1, 0, 0, 0, 1, 0), z, (0.8, 1.1))
        for z in range(slices)
    ]
    source_affine = dicom_affine(headers)
    assert source_affine is not None
    config = PreprocessingConfig(target_spacing=None, size=SIZE, dims=3)  # resized, no zoom
    small = resample_masks(mask, None, None, SIZE)
    volume = series_volume(
        small.astype(np.float32), small, source_affine, (rows, cols), None, config
    )
    assert volume.mask is not None
    back = to_source_grid(volume.mask, volume.affine, source_affine, (cols, rows, slices))
    back = back.transpose(2, 1, 0)
    overlap = 2 * (back & mask).sum() / (back.sum() + mask.sum())
    assert overlap > 0.7  # 2 mm voxels there and back over a 10 x 15 x 7.5 mm box


def test_predict_writes_the_volume_mask_with_the_inputs_affine(tmp_path: Path) -> None:
    model = _everywhere_lesion(tmp_path / "model.pt")
    # A DICOM series wider (80 x 1 mm) than the model's cube (32 x 2 mm = 64 mm).
    volume = 300 + np.random.default_rng(0).normal(0, 5, (6, 80, 80))
    write_dicom_series(volume, (3.0, 1.0, 1.0), tmp_path / "series", SeriesIdentity())
    nifti_affine = np.diag([0.9, 0.9, 3.0, 1.0])
    nifti_volume = volume.transpose(2, 1, 0)[:40, :36].astype(np.float32)
    nib.save(nib.Nifti1Image(nifti_volume, nifti_affine), tmp_path / "case.nii.gz")
    for source in ("series", "case.nii.gz"):
        out = tmp_path / f"out-{source}"
        result = CliRunner().invoke(
            app, ["predict", "--model", str(model), "--input", str(tmp_path / source),
                  "--out", str(out), "--spacing", "2.0"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        (entry,) = json.loads((out / "summary.json").read_text())["inputs"]
        written = nib.load(out / entry["mask_nifti"])
        labels = np.asarray(written.dataobj)
        if source == "series":
            assert labels.shape == (80, 80, 6) and "dicom_seg" in entry
            # The 64 mm cube is centred: the centre is lesion, the corners fall outside it.
            assert labels[40, 40, 3] == 1 and labels[0, 0, 3] == 0 and labels[79, 79, 0] == 0
        else:
            assert labels.shape == nifti_volume.shape
            assert np.allclose(written.affine, nifti_affine)
            assert labels.all()  # 36 x 32 x 18 mm lies inside the 64 mm cube
