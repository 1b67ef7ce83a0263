"""Can the job's network learn the demo's lesions at all? Pooled, without DP, against a shortcut.

Usage: .venv/bin/python bench/demo_learnability.py --data CACHES [--epochs 10] [--lr 0.001]
[--model cnn]
CACHES is a folder of site caches (``medfed-site prepare``). Prints the test ROC-AUC of a
slice's brain area alone (pixels above 20% of the maximum: how deep in the head the slice
lies, which correlates with white matter and so with lesions), then the ``--model`` trained
without DP on every site's training split pooled (Adam, batch 32, the job's class weights),
test ROC-AUC after each epoch. A network that stays near the brain-area figure has not learnt
the lesions, with or without DP.
"""

import argparse

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.models import build_model
from common.tasks.classification import predict_probabilities


def main() -> None:
    """Parse the options, print the shortcut's AUC, train and print the network's per epoch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--class-weights", default="1,2.7")
    parser.add_argument("--model", default="cnn", help="the job's model.name (e.g. pooled-cnn)")
    args = parser.parse_args()
    splits = load_dataset(args.data)
    test = splits.test
    area = (test.images > 0.2 * test.images.max()).reshape(len(test), -1).sum(axis=1)
    print(f"brain area alone: test ROC-AUC {roc_auc_score(test.labels, area):.3f}")
    job = FederationJob.model_validate(
        {
            "train": {"learning_rate": args.lr, "class_weights": args.class_weights},
            "model": {"name": args.model},
            "privacy": {"enabled": False},
        }
    )
    torch.manual_seed(job.seed)
    model = build_model(job.model, splits.in_channels, 2, splits.image_size, False)
    for epoch in range(1, args.epochs + 1):
        update = train_local_round(model, splits.train, job, seed=epoch, privacy_state=None)
        scores = predict_probabilities(model, test)[:, 1]
        auc = roc_auc_score(test.labels, scores)
        print(f"epoch {epoch}: training loss {update.loss:.3f}, test ROC-AUC {auc:.3f}")
    print(f"test slices {len(test)}, lesion share {float(np.mean(test.labels)):.2f}")


if __name__ == "__main__":
    main()
