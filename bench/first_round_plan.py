"""CPU of a real site's first DP round (``SiteClient.fit``) and of the noise calibrations in it.

Run it against two trees to compare them, e.g. before and after a change::

    PYTHONPATH=/path/to/tree OMP_NUM_THREADS=1 python bench/first_round_plan.py

A hospital-sized site (by default as one hospital of ``make simulate``: 105 patients of 6
slices in its training split, batch 64, 2 local epochs, 5 rounds, epsilon 8 per patient) with
its privacy ledger; every call of Opacus' noise search (``calibrate_noise_multiplier``, the
real function) is counted and timed. Prints one JSON object.
"""

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Context, RecordDict

import common.privacy.image_dp
import common.privacy.patient_dp
import common.privacy.planning
from client.privacy_ledger import LEDGER_FILE, PrivacyLedger
from client.site_client import SiteClient
from client.site_limits import SiteLimits
from common import message_keys as keys
from common.federation_job import FederationJob
from common.model_packing import pack_arrays
from common.models import build_model
from common.privacy.accounting import calibrate_noise_multiplier
from simulations.synthetic_lesions import generate_synthetic_lesions

_CALIBRATING = (common.privacy.image_dp, common.privacy.patient_dp, common.privacy.planning)


def _site(path: Path, patients: int, slices: int, size: int) -> Path:
    arrays = generate_synthetic_lesions(
        n_train=patients * slices, n_val=4 * slices, n_test=slices, image_size=size
    )
    for split in ("train", "val", "test"):
        count = len(arrays[f"{split}_labels"])
        arrays[f"{split}_patients"] = np.array([f"{split}-{i // slices}" for i in range(count)])
    np.savez_compressed(path, **arrays)
    return path


def main() -> None:
    """Time one first round and print what it cost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=105)
    parser.add_argument("--slices", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    calls: list[float] = []

    def counted(*a: Any, **k: Any) -> float:
        start = time.process_time()
        noise = calibrate_noise_multiplier(*a, **k)
        calls.append(time.process_time() - start)
        return noise

    for module in _CALIBRATING:
        module.calibrate_noise_multiplier = counted  # type: ignore[attr-defined]  # counting wrapper
    with tempfile.TemporaryDirectory() as folder:
        data = _site(Path(folder) / "site.npz", args.patients, args.slices, args.size)
        job = FederationJob.model_validate(
            {
                "rounds": args.rounds,
                "image_size": args.size,
                "model": {"name": "pooled-cnn"},
                "train": {"batch_size": args.batch_size, "local_epochs": args.local_epochs},
                "privacy": {"enabled": True, "target_epsilon": 8.0, "unit": "patient"},
                "secure_aggregation": {"enabled": False},
            }
        )
        limits = SiteLimits(
            data=data, name="hospital-a", max_epsilon=50.0, state_dir=Path(folder) / "state",
            require_secure_aggregation=False,
        )  # fmt: skip
        context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
        client = SiteClient(context, seed_for_round=lambda r: r, job=job, limits=limits)
        torch.manual_seed(0)
        model = build_model(job.model, 1, 2, (args.size, args.size), True)
        weights = [t.numpy().copy() for t in model.state_dict().values()]
        start_cpu, start = time.process_time(), time.perf_counter()
        _, _, metrics = client.fit([pack_arrays(weights)], {keys.SERVER_ROUND: 1})
        fit_cpu, fit_wall = time.process_time() - start_cpu, time.perf_counter() - start
        rows = PrivacyLedger(Path(folder) / "state" / LEDGER_FILE, "hospital-a").rows()
    print(
        json.dumps(
            {
                "fit_cpu_s": round(fit_cpu, 2),
                "fit_wall_s": round(fit_wall, 2),
                "calibrations": len(calls),
                "calibration_cpu_s": [round(c, 2) for c in calls],
                "epsilon": metrics[keys.EPSILON],
                "ledger_rows": [
                    [r.round, r.kind, r.noise_multiplier, r.sample_rate, r.steps, r.unit]
                    for r in rows
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
