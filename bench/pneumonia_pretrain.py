"""``medfed-sim pretrain`` with data augmentation, for the PneumoniaMNIST DP benches.

Usage: .venv/bin/python bench/pneumonia_pretrain.py --data public.npz --out public-aug.pt
[--augment shift] [--epochs 60] [--model cnn] [--lr 0.001] [--batch 32]

Trains the job's network (built as ``medfed-sim pretrain`` builds it, with DP's layer rules) on
the public stand-in's train split without DP, like ``medfed-sim pretrain`` (Adam, same seed), but
every batch is augmented afresh (bench/pneumonia_augmentation.py): 424 public images memorise in
30 epochs without it (training loss 0.0008). Writes a medfed checkpoint for ``--initial-weights``
and prints the last epoch's training loss and the process's CPU time.
"""

import argparse
import time
from pathlib import Path

import torch
from pneumonia_augmentation import AUGMENTATIONS, augment

from common.checkpoint import save_checkpoint
from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks.registry import task_for
from common.tasks.training import make_loader
from simulations.runner import fit_job_to_data


def pretrain_augmented(
    data: Path,
    augmentation: str,
    epochs: int,
    model_name: str = "cnn",
    lr: float = 0.001,
    batch: int = 32,
) -> tuple[FederationJob, dict[str, torch.Tensor], float]:
    """(job, weights, last epoch's training loss) of ``medfed-sim pretrain`` with augmentation."""
    job = FederationJob.model_validate(
        {"model": {"name": model_name}, "train": {"learning_rate": lr, "batch_size": batch}}
    )
    splits = load_dataset(data, image_size=job.image_size, seed=job.seed)
    job = fit_job_to_data(job, splits)
    task = task_for(job.task)
    torch.manual_seed(job.seed)
    model = build_model(job.model, job.in_channels, job.num_classes, job.spatial_shape, True)
    optimizer = torch.optim.Adam(model.parameters(), lr=job.train.learning_rate)
    loader = make_loader(
        splits.train.images, task.targets(splits.train), batch, shuffle=True, seed=job.seed
    )
    criterion = task.criterion(job)
    model.train()
    loss_sum, seen = 0.0, 0
    for _ in range(epochs):
        loss_sum, seen = 0.0, 0
        for images, targets in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(augment(images, augmentation)), targets)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(targets)
            seen += len(targets)
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    return job, state, loss_sum / max(seen, 1)


def main() -> None:
    """Parse the options, pretrain, write the checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--augment", default="shift", choices=AUGMENTATIONS)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    start = time.process_time()
    job, state, loss = pretrain_augmented(
        args.data, args.augment, args.epochs, args.model, args.lr, args.batch
    )
    save_checkpoint(args.out, state, job, 0, {})
    print(f"epoch {args.epochs}: training loss {loss:.4f}")
    print(f"wrote {args.out} ({args.augment}); cpu {time.process_time() - start:.0f} s")


if __name__ == "__main__":
    main()
