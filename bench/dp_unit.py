"""Benchmark: DP-SGD per patient against per image at the same epsilon, pooled, in one run.

Usage: .venv/bin/python bench/dp_unit.py --data CACHES --unit patient|image [--epochs 5]
       [--epsilon 8] [--batch-size 32] [--lr 0.003]
CACHES is a folder of site caches written by ``medfed-site prepare`` (they know their patients).
Trains the ``cnn`` on every site's training split pooled (no federation) and prints the unit,
epsilon, noise, sample rate, steps, training seconds and the test ROC-AUC.
"""

import argparse
import time
from pathlib import Path

import torch

from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.models import build_model
from common.tasks.registry import task_for


def main() -> None:
    """Parse the options, train once, print one line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--unit", choices=["patient", "image"], required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.003)
    args = parser.parse_args()
    splits = load_dataset(args.data)
    job = FederationJob.model_validate(
        {
            "rounds": 1,
            "train": {
                "batch_size": args.batch_size,
                "local_epochs": args.epochs,
                "learning_rate": args.lr,
            },
            "privacy": {"target_epsilon": args.epsilon, "target_delta": 1e-5, "unit": args.unit},
        }
    )
    torch.manual_seed(0)  # the same initial weights for both units
    model = build_model(job.model, splits.in_channels, splits.num_classes, splits.image_size, True)
    start = time.perf_counter()
    update = train_local_round(model, splits.train, job, seed=0, privacy_state=None)
    seconds = time.perf_counter() - start
    metrics = task_for("classification").evaluate(model, splits.test, splits.class_names)
    state = update.privacy_state
    assert state is not None and update.epsilon is not None
    print(
        f"train {len(splits.train)} images / {splits.train.num_patients} patients, "
        f"test {len(splits.test)} / {splits.test.num_patients}: unit={update.privacy_unit} "
        f"epsilon={update.epsilon:.3f} noise={state.noise_multiplier:.3f} "
        f"q={state.sample_rate:.4f} steps={update.steps} train_s={seconds:.1f} "
        f"test_roc_auc={metrics['roc_auc']:.3f} balanced_accuracy="
        f"{metrics.get('balanced_accuracy', float('nan')):.3f}"
    )


if __name__ == "__main__":
    main()
