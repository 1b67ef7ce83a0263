"""Benchmark: one federated round of a 3D model, each site's update against their mean and pooled.

Usage: .venv/bin/python bench/volume_site_drift.py --volumes VOLUME_CACHES --model CKPT
       [--round N] [--lr LR] [--optimizer adam|sgd] [--format markdown|json]
VOLUME_CACHES is a folder of site caches from `medfed-site prepare --dims 3` (one site per
cache, as `--partition site` splits them); CKPT a segmentation-3d checkpoint (a run's
global_model.pt, saved after every round). From CKPT's weights each site trains one local round
of the checkpoint's job (common.local_training.train_local_round, the sites' own code, with the
seeds a simulated site uses for round N), and so does one model on the sites' training volumes
pooled. Prints each delta's norm, the pairwise cosines of the sites' deltas, |mean delta| over
the sites' mean |delta| (1 when the sites agree, 1/sqrt(sites) when their deltas are
orthogonal), and test Dice and false lesions per volume of the starting model, each site's
model, their FedAvg mean and the pooled model (common.tasks.volume_segmentation.evaluate).
"""

import argparse
import copy
import json
import math
from pathlib import Path

import torch

from client.inference.model import load_trained_model
from common.checkpoint import load_checkpoint
from common.data.arrays import ImageArrays
from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.tasks.volume_segmentation import evaluate

State = dict[str, torch.Tensor]


def _flat_delta(state: State, start: State) -> torch.Tensor:
    return torch.cat([(state[k].double() - start[k].double()).flatten() for k in start])


def main() -> None:
    """Train one round per site and pooled from the checkpoint; print drift and test metrics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--round", type=int, default=1, help="round whose seeds the sites use")
    parser.add_argument("--lr", type=float, help="local learning rate (default: the job's)")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), help="default: the job's")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    args = parser.parse_args()

    trained = load_trained_model(args.model)
    job = FederationJob.model_validate(load_checkpoint(args.model)["job"])
    changes = {"learning_rate": args.lr, "optimizer": args.optimizer}
    train = job.train.model_copy(update={k: v for k, v in changes.items() if v is not None})
    job = job.model_copy(update={"train": train})
    caches = sorted(p.parent for p in args.volumes.glob("*/dataset.npz"))
    sites = [load_dataset(c, image_size=job.image_size, seed=job.seed) for c in caches]
    test = ImageArrays.concatenate([s.test for s in sites])
    names = tuple(sites[0].segment_names or ("background", "lesion"))
    start = copy.deepcopy(trained.network.state_dict())

    def trained_on(data: ImageArrays, seed: int) -> State:
        model = copy.deepcopy(trained.network)
        model.load_state_dict(start)
        return train_local_round(model, data, job, seed=seed, privacy_state=None).state_dict

    # the seeds of a simulated site (client.site_client) and of the pooled baseline
    states = {
        f"site {k}": trained_on(s.train, job.seed * 100_003 + args.round * 1_009 + k)
        for k, s in enumerate(sites)
    }
    site_states = list(states.values())
    states["FedAvg mean"] = {
        k: start[k] + sum(st[k] - start[k] for st in site_states) / len(site_states) for k in start
    }
    pooled = ImageArrays.concatenate([s.train for s in sites])
    states["pooled"] = trained_on(pooled, job.seed * 1_009 + args.round)
    deltas = {name: _flat_delta(state, start) for name, state in states.items()}
    site_deltas = [deltas[f"site {k}"] for k in range(len(sites))]
    cosines = [
        float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        for i, a in enumerate(site_deltas)
        for b in site_deltas[i + 1 :]
    ]
    mean_norm = sum(float(d.norm()) for d in site_deltas) / len(site_deltas)
    rows: dict[str, dict[str, float]] = {}
    for name, state in {"start": start, **states}.items():
        model = copy.deepcopy(trained.network)
        model.load_state_dict(state)
        metrics = evaluate(model, test, names)
        rows[name] = {
            "delta_norm": float(deltas[name].norm()) if name in deltas else 0.0,
            "dice": metrics["dice"],
            "false_lesions_per_volume": metrics["false_lesions_per_volume"],
        }
    summary = {
        "site_delta_cosines": cosines,
        "mean_delta_over_site_norm": float(deltas["FedAvg mean"].norm()) / mean_norm,
        "orthogonal_would_give": 1 / math.sqrt(len(sites)),
        "pooled_cosine_to_mean": float(
            torch.nn.functional.cosine_similarity(deltas["pooled"], deltas["FedAvg mean"], dim=0)
        ),
    }
    if args.format == "json":
        print(json.dumps({"models": rows, **summary}, indent=2))
        return
    print(f"{len(test)} test volumes; {job.train.optimizer} lr {job.train.learning_rate}")
    print("| model | norm of delta | test Dice | false lesions / volume |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        cells = (row["delta_norm"], row["dice"], row["false_lesions_per_volume"])
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
    print("pairwise cosines of the sites' deltas: " + ", ".join(f"{c:.3f}" for c in cosines))
    print(
        f"|mean delta| / mean |site delta|: {summary['mean_delta_over_site_norm']:.3f} "
        f"(orthogonal deltas: {summary['orthogonal_would_give']:.3f}); "
        f"cosine of pooled delta to the mean: {summary['pooled_cosine_to_mean']:.3f}"
    )


if __name__ == "__main__":
    main()
