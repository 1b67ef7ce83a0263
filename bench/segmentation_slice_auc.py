"""A segmentation model's slices scored as a classifier: ROC-AUC of its largest lesion probability.

Usage: .venv/bin/python bench/segmentation_slice_auc.py --data CACHES --model NAME=CHECKPOINT
[--model ...] [--min-area 0,100]

CACHES is a folder of site caches prepared for segmentation (masks kept), CHECKPOINT a
segmentation run's ``global_model.pt`` trained on caches of the same contract. For each
model, every site's test slices are scored by the highest foreground probability of any pixel
(the model's confidence that the slice holds a lesion), and for each ``--min-area`` (mm^2) the
slices are labelled as `prepare --min-label-area` labels them: positive from that much mask
area, negative without any, slivers in between left out. Prints per model and area: slices,
positives, ROC-AUC of the score (sklearn), and balanced accuracy and F1 of the rule "the
predicted mask has a lesion pixel" (argmax, no threshold chosen on any data).
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from common.checkpoint import load_checkpoint
from common.data.arrays import ImageArrays
from common.data.loading import load_dataset
from common.data.preprocessing_contract import read_contract_beside
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks.training import make_loader


def _lesion_probability(model: torch.nn.Module, data: ImageArrays) -> np.ndarray:
    """Foreground probability [N, H, W] (1 - background) of every test slice."""
    model.eval()
    out = []
    with torch.no_grad():
        loader = make_loader(data.images, data.labels, 64, shuffle=False)
        for images, _ in loader:
            out.append(1.0 - torch.softmax(model(images), dim=1)[:, 0])
    return torch.cat(out).numpy()


def main() -> None:
    """Score each model's test slices; print AUC, balanced accuracy and F1 per label rule."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT")
    parser.add_argument("--min-area", default="0,100")
    args = parser.parse_args()
    sites = sorted(args.data.glob("site-*"))
    contract = read_contract_beside(sites[0])
    pixel_mm2 = (contract.spacing_mm or 1.0) ** 2 if contract is not None else 1.0
    tests = [load_dataset(site).test for site in sites]
    masks = np.concatenate([t.masks for t in tests if t.masks is not None])
    area = masks.reshape(len(masks), -1).astype(bool).sum(1) * pixel_mm2
    for spec in args.model:
        name, path = spec.split("=", 1)
        saved = load_checkpoint(Path(path))
        job = FederationJob.model_validate(saved["job"])
        model = build_model(
            job.model, job.in_channels, job.num_classes, job.spatial_shape, job.privacy.enabled
        )
        model.load_state_dict(saved["state_dict"])
        probability = np.concatenate([_lesion_probability(model, t) for t in tests])
        score = probability.reshape(len(probability), -1).max(1)
        predicted = (probability.reshape(len(probability), -1) > 0.5).any(1).astype(int)
        for min_area in (float(a) for a in args.min_area.split(",")):
            kept = (area == 0) | (area >= max(min_area, 1e-9))
            labels = (area[kept] > 0).astype(int)
            print(
                f"{name}: min area {min_area:g} mm^2: {int(kept.sum())} slices, "
                f"{int(labels.sum())} lesion; ROC-AUC {roc_auc_score(labels, score[kept]):.3f}, "
                f"predicted-mask rule balanced accuracy "
                f"{balanced_accuracy_score(labels, predicted[kept]):.3f}, "
                f"F1 {f1_score(labels, predicted[kept]):.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
