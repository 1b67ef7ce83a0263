"""Benchmark: test accuracy with and without one hostile site, mean vs robust aggregation.

In one process, on medfed's own pieces: each site trains with ``train_local_round`` (no DP,
fixed seeds) and the coordinator's real ``DeltaFedAvg`` validates, combines and applies the
deltas (no Flower transport: it would add ~60 s of start-up per configuration). The attacker
is site 0 and sends its own delta reversed and stretched to just inside the job's
``max_update_norm`` ("flip": it passes every validation check), or its delta x1000
("scale1000": rejected by validation), declaring 10**9 training images either way.

Usage: PYTHONPATH=. .venv/bin/python bench/robust_aggregation.py [--sites 4] [--rounds 3]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.server.client_proxy import ClientProxy

from common.data.federated_split import split_across_sites
from common.data.loading import load_dataset
from common.data.partition import PartitionScheme
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.models import build_model
from common.tasks.classification import evaluate
from common.update_encoding import encode_update
from server.run_recorder import RunRecorder
from server.strategies import DeltaFedAvg, RoundHooks
from simulations.synthetic_lesions import write_synthetic_lesions

RULES = ("mean", "median", "trimmed-mean", "krum", "multi-krum")
ATTACKS = ("none", "flip", "scale1000")


class _Site(ClientProxy):
    def get_properties(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102
    def get_parameters(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102
    def fit(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102
    def evaluate(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102
    def reconnect(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102


def _attack(kind: str, delta: list[np.ndarray], bound: float) -> list[np.ndarray]:
    if kind == "flip":
        norm = float(np.sqrt(sum(np.square(d, dtype=np.float64).sum() for d in delta)))
        return [d * np.float32(-0.999 * bound / norm) for d in delta]
    return [d * np.float32(1000) for d in delta]


def _federate(rule: str, attack: str, args: argparse.Namespace, tmp: str) -> dict[str, float]:
    job = FederationJob.model_validate(
        {
            "rounds": args.rounds,
            "image_size": 16,
            "train": {"batch_size": 20, "learning_rate": 0.003},
            "privacy": {"enabled": False},
            "strategy": {"aggregation": rule, "byzantine_sites": 1},
            "secure_aggregation": {"enabled": False},
        }
    )
    data = load_dataset(args.data, image_size=16, seed=0)
    sites = split_across_sites(data, args.sites, PartitionScheme.parse("iid"), 0)
    torch.manual_seed(0)
    state = build_model(job.model, 1, 2, (16, 16), False).state_dict()
    recorder = RunRecorder(Path(tmp), job.rounds)
    strategy = DeltaFedAvg(job, state, recorder, RoundHooks(lambda *_: 0), 2)
    bound = job.secure_aggregation.max_update_norm
    for server_round in range(1, job.rounds + 1):
        replies = []
        for index, site in enumerate(sites):
            model = build_model(job.model, 1, 2, (16, 16), False)
            model.load_state_dict(strategy.global_state())
            glob = [a.copy() for a in strategy.global_arrays]
            seed = server_round * 1_009 + index
            update = train_local_round(model, site.train, job, seed=seed, privacy_state=None)
            delta = [
                t.detach().numpy().astype(np.float32) - g
                for t, g in zip(update.state_dict.values(), glob, strict=True)
            ]
            count = update.num_examples
            if index == 0 and attack != "none":
                delta, count = _attack(attack, delta, bound), 10**9
            proxy = _Site(str(index))
            proxy.node_id = index
            sent = ndarrays_to_parameters([encode_update(delta)])  # as the site's ClientApp
            res = FitRes(Status(Code.OK, ""), sent, count, {})
            replies.append((proxy, res))
        strategy._sampled = list(range(len(sites)))
        parameters, _ = strategy.aggregate_fit(server_round, replies, [])
        assert parameters is not None
    final = build_model(job.model, 1, 2, (16, 16), False)
    final.load_state_dict(strategy.global_state())
    metrics = evaluate(final, data.test)
    return {
        "accuracy": metrics["accuracy"],
        "roc_auc": metrics["roc_auc"],
        "rejected": len(strategy.recorder.rejections),
    }


def main() -> None:
    """Print the table: one row per aggregation rule, one column per attack."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="/tmp/medfed-bench-robust")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.data = write_synthetic_lesions(
        f"{args.out}/lesions.npz", n_train=800, n_val=80, n_test=400, image_size=16, seed=7
    )
    started = time.monotonic()
    header = "| aggregation | " + " | ".join(f"{a}: acc / AUC (rejected)" for a in ATTACKS)
    rows = [header + " |", "|---" * (len(ATTACKS) + 1) + "|"]
    for rule in RULES:
        cells = []
        for attack in ATTACKS:
            r = _federate(rule, attack, args, f"{args.out}/{rule}-{attack}")
            cells.append(f"{r['accuracy']:.3f} / {r['roc_auc']:.3f} ({r['rejected']:.0f})")
        rows.append(f"| {rule} | " + " | ".join(cells) + " |")
    print("\n".join(rows))
    print(
        f"{args.sites} sites (site 0 hostile when attacked), {args.rounds} rounds, "
        f"synthetic lesions 16x16, 800 train / 400 test, no DP; {time.monotonic() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
