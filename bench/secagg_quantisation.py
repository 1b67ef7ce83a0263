"""Benchmark: the SecAgg+ global model against plain FedAvg's, same seeds, at N simulated sites.

Usage: .venv/bin/python bench/secagg_quantisation.py [--sites 3 10] [--modulus-bits 24]
Runs one DP-SGD round of the same job twice in Flower's simulation (fixed seeds: the sites
train the same deltas), with and without SecAgg+, and prints the largest entry difference
between the two global models, next to how far the round moved the model and to the bound
of the quantisation error (sites x one level / the summed weights, docs/security.md). Each
site holds 64 + 32 x its index generated 32x32 images (as tests/server/test_secure_aggregation).
"""

import argparse
import tempfile
from pathlib import Path

import torch

from common.checkpoint import load_checkpoint
from common.config import PrivacyConfig
from common.data.site_cache import DATASET_FILE
from common.federation_job import FederationJob, SecureAggregationConfig
from common.masked_packing import quantization_levels
from common.models import build_model
from simulations.runner import run_simulation_job
from simulations.simulation_settings import SimulationSettings
from simulations.synthetic_lesions import write_synthetic_lesions


def _compare(root: Path, sites: int, bits: int) -> str:
    caches = root / "caches"
    for i in range(sites):
        write_synthetic_lesions(caches / f"site-{i}" / DATASET_FILE, n_train=64 + 32 * i,
                                n_val=16, n_test=4, image_size=32, seed=i)  # fmt: skip
    settings = SimulationSettings(data=caches, sites=sites, partition="site")
    models = {}
    for secure in (False, True):
        job = FederationJob(
            name="quantisation",
            rounds=1,
            min_sites=sites,
            image_size=32,
            privacy=PrivacyConfig(enabled=True, target_epsilon=8.0),
            secure_aggregation=SecureAggregationConfig(enabled=secure, modulus_bits=bits),
        )
        run_dir = root / ("secure" if secure else "plain")
        run_simulation_job(job, settings, run_dir, [])
        models[secure] = load_checkpoint(run_dir / "global_model.pt")["state_dict"]
    torch.manual_seed(job.seed)
    initial = build_model(job.model, 1, 2, (32, 32), dp_enabled=True).state_dict()
    difference = max(
        float((models[True][n].float() - models[False][n].float()).abs().max()) for n in initial
    )
    moved = max(float((models[False][n].float() - initial[n].float()).abs().max()) for n in initial)
    levels = quantization_levels(2**bits, sites)
    weights = sum(64 + 32 * i for i in range(sites)) / job.secure_aggregation.max_weight
    bound = sites * 2 * job.secure_aggregation.clipping_range / levels / weights
    return (
        f"| {sites} | {bits} | {levels:,} | {difference:.3g} | {bound:.3g} | {moved:.3g} | "
        f"{moved / difference:.0f} |"
    )


def main() -> None:
    """Run the comparisons and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--modulus-bits", type=int, choices=(24, 32), default=24)
    args = parser.parse_args()
    rows = []
    for sites in args.sites:
        with tempfile.TemporaryDirectory(prefix="medfed-quantisation-") as scratch:
            rows.append(_compare(Path(scratch), sites, args.modulus_bits))
            print(rows[-1], flush=True)
    print(
        "\n| sites | modulus bits | levels | max entry difference SecAgg+ - plain | bound "
        "(sites x level / weights) | max entry moved by the round | moved / difference |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
