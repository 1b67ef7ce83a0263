"""Choose a classifier's network and learning rate on public data only, before any hospital run.

Usage: .venv/bin/python bench/public_recipe.py --data PUBLIC [--models pooled-cnn,cnn]
[--lrs 0.001,0.003,0.01] [--epochs 60] [--every 20] [--class-weights 1,2.7] [--seed 0]

PUBLIC is a folder of site caches that are not the hospitals' (the stand-in `medfed-sim
pretrain` trains on). For each network and Adam learning rate, trains on PUBLIC's train split
exactly as `medfed-sim pretrain` does (same job defaults, DP layer constraints, class-weighted
loss, batch 32) and every ``--every`` epochs prints the training loss and the ROC-AUC on the
public validation and test splits together (``pretrain`` reports its validation split alone,
one patient here). No hospital image is read, so choosing a recipe from these lines is free
of the hospitals' test sets. Prints one line per checkpoint and the CPU seconds it took.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from common.data.arrays import ImageArrays
from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks.classification import predict_probabilities
from common.tasks.registry import task_for
from common.tasks.training import make_loader, train_epochs
from simulations.runner import fit_job_to_data


def _held_out(splits_val: ImageArrays, splits_test: ImageArrays) -> ImageArrays:
    return ImageArrays(
        images=np.concatenate([splits_val.images, splits_test.images]),
        labels=np.concatenate([splits_val.labels, splits_test.labels]),
    )


def main() -> None:
    """Train each (network, learning rate) on the public train split; print held-out ROC-AUC."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--models", default="pooled-cnn,cnn")
    parser.add_argument("--lrs", default="0.001,0.003,0.01")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--class-weights", default="1,2.7")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in args.models.split(","):
        for lr in (float(v) for v in args.lrs.split(",")):
            job = FederationJob.model_validate(
                {"task": "classification", "seed": args.seed, "model": {"name": name},
                 "train": {"learning_rate": lr, "class_weights": args.class_weights}}
            )  # fmt: skip
            splits = load_dataset(args.data, image_size=job.image_size, seed=job.seed)
            job = fit_job_to_data(job, splits)
            held_out = _held_out(splits.val, splits.test)
            task = task_for(job.task)
            torch.manual_seed(job.seed)
            model = build_model(
                job.model, job.in_channels, job.num_classes, job.spatial_shape, True
            )
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            loader = make_loader(
                splits.train.images, task.targets(splits.train), job.train.batch_size,
                shuffle=True, seed=job.seed,
            )  # fmt: skip
            criterion = task.criterion(job)
            start = time.process_time()
            for done in range(args.every, args.epochs + 1, args.every):
                stats = train_epochs(model, loader, optimizer, args.every, criterion)
                scores = predict_probabilities(model, held_out)[:, 1]
                auc = roc_auc_score(held_out.labels, scores)
                print(
                    f"{name} lr {lr:g} epoch {done}: train loss {stats.loss:.3f}, public "
                    f"val+test ({len(held_out.labels)} slices, {int(held_out.labels.sum())} "
                    f"lesion) ROC-AUC {auc:.3f}, {time.process_time() - start:.1f} s CPU",
                    flush=True,
                )


if __name__ == "__main__":
    main()
