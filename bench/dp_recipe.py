"""A DP recipe's federated rounds in one process: FedAvg of the sites' deltas, quick to compare.

Usage: .venv/bin/python bench/dp_recipe.py --data CACHES [--weights public.pt]
[--trainable all|last-block|head] [--lr 0.003] [--rounds 5] [--epochs 2] [--batch 64]
[--eps 8] [--no-dp]
CACHES is a folder of site caches (``medfed-site prepare``), one site each, as ``medfed-sim run
--partition site`` makes them. Each round every site trains the global model with
``train_local_round`` (patient-level DP-SGD, the job's accountant kept across rounds), and the
sample-weighted mean of their deltas is added to it: ``medfed-sim run``'s FedAvg without Flower,
Ray and SecAgg+ (whose quantisation changes the deltas by about 1e-6). Prints, before the first
round and after each, the test ROC-AUC and the balanced accuracy and F1 at the threshold chosen
on the sites' validation slices (as the federation chooses it), then the process's CPU time.
"""

import argparse
import time
from pathlib import Path

import torch

from common.data.arrays import ImageArrays
from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.initial_weights import initial_state
from common.local_training import train_local_round
from common.models import build_model
from common.tasks.classification import evaluate_at_validation_threshold


def _summary(model: torch.nn.Module, val: ImageArrays, test: ImageArrays) -> str:
    metrics = evaluate_at_validation_threshold(model, val, test)
    return (
        f"roc_auc {metrics['roc_auc']:.3f} balanced_accuracy {metrics['balanced_accuracy']:.3f} "
        f"f1 {metrics['f1']:.3f} threshold {metrics.get('threshold', float('nan')):.3f}"
    )


def main() -> None:
    """Parse the options, run the rounds, print one line per round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", default="", help="initial weights (medfed-sim pretrain)")
    parser.add_argument("--trainable", default="all")
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="local epochs per round")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eps", type=float, default=8.0)
    parser.add_argument("--class-weights", default="1,2.7")
    parser.add_argument("--model", default="pooled-cnn")
    parser.add_argument("--no-dp", action="store_true")
    args = parser.parse_args()
    start = time.process_time()
    sites = [load_dataset(path) for path in sorted(Path(args.data).glob("site-*"))]
    val = ImageArrays.concatenate([site.val for site in sites])
    test = ImageArrays.concatenate([site.test for site in sites])
    job = FederationJob.model_validate(
        {
            "rounds": args.rounds,
            "model": {"name": args.model, "initial_weights": args.weights},
            "train": {
                "batch_size": args.batch,
                "local_epochs": args.epochs,
                "learning_rate": args.lr,
                "class_weights": args.class_weights,
                "trainable": args.trainable,
            },
            "privacy": {"enabled": not args.no_dp, "target_epsilon": args.eps, "unit": "patient"},
        }
    )
    shape = sites[0].image_size
    model = build_model(job.model, sites[0].in_channels, 2, shape, job.privacy.enabled)
    weights = initial_state(job)
    if weights is not None:
        model.load_state_dict(weights)
    print(f"round 0: {_summary(model, val, test)}", flush=True)
    states: list = [None] * len(sites)
    for server_round in range(1, args.rounds + 1):
        start_state = {key: value.clone() for key, value in model.state_dict().items()}
        total = {key: torch.zeros_like(value) for key, value in start_state.items()}
        samples = 0
        epsilon = None
        for index, site in enumerate(sites):
            local = build_model(job.model, site.in_channels, 2, shape, job.privacy.enabled)
            local.load_state_dict(start_state)
            seed = 1000 * index + server_round
            update = train_local_round(local, site.train, job, seed, states[index])
            states[index], epsilon = update.privacy_state, update.epsilon
            for key in total:
                total[key] += (update.state_dict[key] - start_state[key]) * update.num_examples
            samples += update.num_examples
        model.load_state_dict({key: start_state[key] + total[key] / samples for key in total})
        print(f"round {server_round}: {_summary(model, val, test)} epsilon {epsilon}", flush=True)
    print(f"cpu {time.process_time() - start:.0f} s")


if __name__ == "__main__":
    main()
