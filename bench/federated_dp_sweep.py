"""medfed-sim run's FedAvg rounds on a split .npz, in one process: a quick DP recipe sweep.

Usage: .venv/bin/python bench/federated_dp_sweep.py --data DATA.npz [--sites 3]
[--partition dirichlet:0.5] [--weights public.pt] [--model cnn] [--norm group]
[--trainable all|last-block|head] [--optimizer adam] [--lr 0.002] [--rounds 10] [--epochs 2]
[--batch 128] [--max-grad-norm 1.0] [--eps 8] [--no-dp]

The data is split across sites as ``medfed-sim run --sites --partition`` splits it (same seed,
same sites). Each round every site trains the global model with ``train_local_round`` (DP-SGD
with the noise calibrated for the whole job on the first round and the accountant kept across
rounds, as a site does), and the sample-weighted mean of their deltas is added to it: FedAvg
without Flower, Ray and SecAgg+ (whose quantisation changes the deltas by about 1e-6), so a
recipe costs a fraction of a full simulation. Prints the test ROC-AUC before the first round and
after each (balanced accuracy and F1 at the threshold chosen on the sites' validation data),
epsilon with its unit, then the process's CPU time. Confirm a recipe with ``medfed-sim run``.
"""

import argparse
import time
from pathlib import Path

from in_process_fedavg import run_fedavg

from common.data.arrays import ImageArrays
from common.data.federated_split import split_across_sites
from common.data.loading import load_dataset
from common.data.partition import PartitionScheme
from common.federation_job import FederationJob
from simulations.runner import fit_job_to_data


def add_job_options(
    parser: argparse.ArgumentParser, *, optimizer: str, lr: float, batch: int
) -> None:
    """The data, split and job options :func:`job_from_args` reads, with this bench's defaults."""
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--partition", default="dirichlet:0.5")
    parser.add_argument("--weights", default="", help="initial weights (medfed-sim pretrain)")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--norm", default="group")
    parser.add_argument("--trainable", default="all", help="all, last-block or head")
    parser.add_argument("--optimizer", default=optimizer)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2, help="local epochs per round")
    parser.add_argument("--batch", type=int, default=batch, help="expected batch under DP")
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--eps", type=float, default=8.0)
    parser.add_argument("--no-dp", action="store_true")


def job_from_args(args: argparse.Namespace) -> FederationJob:
    """The job this bench's options describe (shared by bench/pneumonia_dp_levers.py)."""
    return FederationJob.model_validate(
        {
            "rounds": max(args.rounds, 1),  # --rounds 0 evaluates the initial weights
            "model": {"name": args.model, "norm": args.norm, "initial_weights": args.weights},
            "train": {
                "batch_size": args.batch,
                "local_epochs": args.epochs,
                "learning_rate": args.lr,
                "optimizer": args.optimizer,
                "trainable": args.trainable,
            },
            "privacy": {
                "enabled": not args.no_dp,
                "target_epsilon": args.eps,
                "max_grad_norm": args.max_grad_norm,
            },
        }
    )


def main() -> None:
    """Parse the options, run the rounds, print one line per round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_job_options(parser, optimizer="adam", lr=0.002, batch=128)
    args = parser.parse_args()
    start = time.process_time()
    job = job_from_args(args)
    splits = load_dataset(args.data, image_size=job.image_size, seed=job.seed)
    job = fit_job_to_data(job, splits)
    sites = split_across_sites(splits, args.sites, PartitionScheme.parse(args.partition), job.seed)
    val = ImageArrays.concatenate([site.val for site in sites])
    run_fedavg(job, [site.train for site in sites], val, splits.test, args.rounds)
    print(f"cpu {time.process_time() - start:.0f} s")


if __name__ == "__main__":
    main()
