"""Benchmark: the coordinator's CPU per site reply, the input to the deployment's scaling estimate.

Usage: .venv/bin/python bench/coordinator_cost.py [--sites 10 100 300] [--repeats 3]
For each network (the default classification CNN, pooled-cnn, the default 2D U-Net) and each
number of sites, times in one thread what the coordinator does with a round's replies: decode
each reply (Flower's ``parameters_to_ndarrays``, then inflating the compressed delta:
``common.update_encoding.decode_update``), check it (``update_problem``, as
``DeltaFedAvg`` does, with a norm cap) and combine them (``aggregate_deltas``: the mean, and the
coordinate-wise median). Prints CPU seconds per round and per reply (median of the repeats).
The replies are random (Gaussian) deltas of the model's shapes, compressed as sites send them.
Not timed here: the sites' training, Flower's message routing and SecAgg+
(bench/secagg_overhead.py).
"""

import argparse
import statistics
import time

import numpy as np
import torch
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

from common.config import ModelConfig, StrategyConfig
from common.models import build_model
from common.update_encoding import decode_update, encode_update
from server.delta_aggregation import aggregate_deltas
from server.update_validation import update_problem

NETWORKS = {
    "cnn": ((1, 2, (64, 64)), "classification CNN"),
    "pooled-cnn": ((1, 2, (64, 64)), "pooled-cnn"),
    "unet": ((1, 2, (64, 64)), "2D U-Net"),
}


def _shapes(name: str) -> list[np.ndarray]:
    (channels, outputs, size), _ = NETWORKS[name]
    model = build_model(ModelConfig(name=name), channels, outputs, size, dp_enabled=False)
    return [p.detach().numpy() for p in model.state_dict().values()]


def _round_seconds(reference: list[np.ndarray], sites: int, rule: str) -> float:
    rng = np.random.default_rng(0)
    replies = [  # compressed, as a site's ClientApp sends a plain round's delta
        ndarrays_to_parameters(
            [encode_update([rng.normal(0, 1e-3, a.shape).astype(np.float32) for a in reference])]
        )
        for _ in range(sites)
    ]
    shapes = [a.shape for a in reference]
    strategy = StrategyConfig(aggregation=rule)
    start = time.process_time()
    valid = []
    for reply in replies:
        delta = decode_update(parameters_to_ndarrays(reply), shapes, np.dtype(np.float32))
        if update_problem(delta, reference, bound=None, max_norm=10.0) is None:
            valid.append((delta, 100))
    aggregate_deltas(strategy, valid)
    return time.process_time() - start


def main() -> None:
    """Print the coordinator's CPU per round and per reply for each network and site count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 100, 300])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("network | parameters | sites | rule | CPU s per round | CPU ms per reply")
    for name, (_, label) in NETWORKS.items():
        reference = _shapes(name)
        parameters = sum(a.size for a in reference)
        for sites in args.sites:
            for rule in ("mean", "median"):
                seconds = statistics.median(
                    _round_seconds(reference, sites, rule) for _ in range(args.repeats)
                )
                print(
                    f"{label} | {parameters:,} | {sites} | {rule} | {seconds:.3f} | "
                    f"{1000 * seconds / sites:.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
