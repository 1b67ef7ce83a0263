"""3D segmentation: trained on patches of volumes, evaluated per volume by sliding windows.

Each round draws new patches, ``PATCHES_PER_VOLUME`` per volume, each centred on a lesion or a
background voxel with probability ``LESION_CENTRED`` (MONAI's RandCropByPosNegLabeld). A
patch keeps its volume's patient, so patient-level DP-SGD clips and accounts all of a
patient's patches together. Memory is bounded by the patch, in training and at inference
(MONAI's sliding_window_inference).
"""

import math
from collections.abc import Hashable

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.transforms import RandCropByPosNegLabeld
from torch import nn

from common.data.arrays import ImageArrays
from common.data.volumes import voxel_spacing
from common.federation_job import FederationJob
from common.models import halvings, halvings_of
from common.tasks.segmentation import criterion, targets
from common.tasks.volume_metrics import volume_metrics

__all__ = [
    "LESION_CENTRED",
    "PATCHES_PER_VOLUME",
    "evaluate",
    "patch_side",
    "predict_volume",
    "training_patches",
    "volume_spacings",
]

#: Patches drawn from each volume per round (each around a lesion or a background voxel).
#: 8 rather than 4: twice the steps per local epoch from the same volumes (docs/results.md).
PATCHES_PER_VOLUME = 8
#: Probability that a patch is centred on a lesion voxel (else on background). Lesions are
#: about 0.5% of a demo volume's voxels; at 0.5 the network spends its first epochs predicting
#: background only, at 0.8 it leaves that phase within the first epochs (docs/results.md). A
#: background-centred patch still holds mostly brain, so false positives are still penalised.
LESION_CENTRED = 0.8


def patch_side(volume_side: int, halvings: int) -> int:
    """Side of the cubic training patches and inference windows of a network and volume.

    About half the volume, rounded up to a multiple of ``2**halvings`` (the network's
    halvings, common.models.halvings), at least twice that (instance norm needs more than one
    voxel at the bottom), never more than the volume. UNet (3 halvings): 24 -> 16, 48 -> 24,
    64 -> 32; BasicUNet (4): 48 -> 32. Smaller patches cost less per step (a 24^3 patch is
    0.42 of a 32^3 one) and still span 72 mm at 3 mm.
    """
    multiple = 2**halvings
    half = math.ceil(volume_side / 2 / multiple) * multiple
    return min(volume_side, max(2 * multiple, half))


def training_patches(data: ImageArrays, seed: int, job: FederationJob) -> ImageArrays:
    """``PATCHES_PER_VOLUME`` patches of every volume, lesion-centred and background alike.

    A volume without lesion gives background patches only. Labels say whether a patch holds
    foreground; patients and sites are the volume's.
    """
    masks = targets(data)
    side = patch_side(int(data.images.shape[2]), halvings(job.model.name))
    crop = RandCropByPosNegLabeld(
        keys=("image", "label"),
        label_key="label",
        spatial_size=(side,) * 3,
        pos=LESION_CENTRED,
        neg=1 - LESION_CENTRED,
        num_samples=PATCHES_PER_VOLUME,
        allow_smaller=False,
    )
    crop.set_random_state(seed=seed % 2**32)
    images, labels, owners = [], [], []
    for index in range(len(data)):
        sample: dict[Hashable, torch.Tensor] = {
            "image": torch.from_numpy(data.images[index]),
            "label": torch.from_numpy(masks[index][None]),
        }
        for patch in crop(sample):
            images.append(np.asarray(patch["image"], dtype=np.float32))
            labels.append(np.asarray(patch["label"], dtype=np.uint8)[0])
            owners.append(index)
    chosen = np.asarray(owners, dtype=np.int64)
    patch_masks = np.stack(labels)
    has_lesion = np.asarray((patch_masks.reshape(len(chosen), -1) > 0).any(axis=1))
    return ImageArrays(
        images=np.stack(images),
        labels=has_lesion.astype(np.int64),
        sites=data.sites[chosen] if data.sites is not None else None,
        masks=patch_masks,
        patients=data.patients[chosen] if data.patients is not None else None,
    )


@torch.no_grad()
def predict_volume(model: nn.Module, volume: torch.Tensor) -> torch.Tensor:
    """Logits [1, K, X, Y, Z] of one volume [1, C, X, Y, Z], window by window (Gaussian blend)."""
    side = patch_side(int(volume.shape[2]), halvings_of(model))
    logits = sliding_window_inference(
        volume, roi_size=(side,) * 3, sw_batch_size=4, predictor=model, overlap=0.25,
        mode="gaussian",
    )  # fmt: skip
    assert isinstance(logits, torch.Tensor)  # one tensor in, one out
    return logits


def volume_spacings(data: ImageArrays) -> np.ndarray:
    """Voxel spacing [N, 3] (mm) of each volume from its affine; 1 mm when the data has none."""
    if data.affines is None:
        return np.ones((len(data), 3))
    return np.array([voxel_spacing(a) for a in data.affines], dtype=np.float64).reshape(-1, 3)


def evaluate(
    model: nn.Module, data: ImageArrays, segment_names: tuple[str, ...]
) -> dict[str, float]:
    """Dice + CE loss per volume, and the per-volume metrics of common.tasks.volume_metrics.

    Distances are in mm, from each volume's affine (1 mm voxels when the data has none).
    """
    model.eval()
    loss_fn = criterion()
    truth = targets(data)
    predicted, total = [], 0.0
    for index in range(len(data)):
        logits = predict_volume(model, torch.from_numpy(data.images[index : index + 1]))
        total += float(loss_fn(logits, torch.from_numpy(truth[index : index + 1])))
        predicted.append(logits.argmax(dim=1)[0].to(torch.uint8).numpy())
    shape = (0, *truth.shape[1:])
    masks = np.stack(predicted) if predicted else np.zeros(shape, dtype=np.uint8)
    metrics = volume_metrics(truth, masks, volume_spacings(data), segment_names)
    return {"loss": total / max(len(data), 1), **metrics}
