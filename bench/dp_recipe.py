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

from in_process_fedavg import run_fedavg

from common.data.arrays import ImageArrays
from common.data.loading import load_dataset
from common.federation_job import FederationJob
from simulations.runner import fit_job_to_data


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
    job = fit_job_to_data(job, sites[0])
    run_fedavg(job, [site.train for site in sites], val, test, args.rounds)
    print(f"cpu {time.process_time() - start:.0f} s")


if __name__ == "__main__":
    main()
