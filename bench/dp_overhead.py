"""Benchmark: one local epoch with DP-SGD over one without, on the same data, in one run.

Usage: .venv/bin/python bench/dp_overhead.py [--data PATH] [--task classification]
       [--model cnn] [--norm group] [--batch-size 32] [--repeats 3] [--train-images N]
Each repeat trains one epoch without DP then one with DP-SGD (fresh models), so that both see
the same load on a shared machine. The DP epoch is a round after a job's first: the noise
multiplier, calibrated once per job, comes from the job's privacy state (the calibration's own
time, paid once on a job's first round, is printed apart). Prints the median seconds per
epoch of each and the median of the repeats' DP / no-DP ratios (wall clock and this process's
CPU time, steadier on a shared machine), the per-sample gradient path DP-SGD took, and the
peak resident memory after the first no-DP epoch and at the end.
Segmentation: --task segmentation --model basicunet|unet --data CACHE_WITH_MASKS.
Volumes: --task segmentation-3d --data CACHE (prepared with --dims 3; trains on patches).
"""

import argparse
import resource
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from common.data.arrays import DatasetSplits
from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.models import build_model
from common.privacy.accounting import PrivacyState
from common.privacy.per_sample_gradients import fast_path_blockers
from common.privacy.planning import plan_round
from common.tasks.registry import task_for
from simulations.synthetic_lesions import write_synthetic_lesions


def _job(args: argparse.Namespace, dp: bool) -> FederationJob:
    model = {k: v for k, v in (("name", args.model), ("norm", args.norm)) if v}
    return FederationJob.model_validate(
        {
            "task": args.task,
            "model": model,
            "train": {"batch_size": args.batch_size},
            "privacy": {"enabled": dp, "unit": args.unit},
        }
    )


def _calibrated_state(job: FederationJob, splits: DatasetSplits) -> tuple[PrivacyState, float]:
    """The privacy state a job's later rounds start from, and the CPU seconds to calibrate it."""
    data = task_for(job.task).training_samples(splits.train, 0, job)
    start_cpu = time.process_time()
    plan = plan_round(
        job.privacy, data, job.train.batch_size, job.train.local_epochs, job.rounds, None
    )
    return plan.starting_state(None), time.process_time() - start_cpu


def _epoch_seconds(
    job: FederationJob, splits: DatasetSplits, seed: int, state: PrivacyState | None
) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one local epoch of a fresh model."""
    outputs = len(task_for(job.task).output_names(splits))
    torch.manual_seed(seed)
    model = build_model(
        job.model, splits.in_channels, outputs, splits.image_size, job.privacy.enabled
    )
    start, start_cpu = time.perf_counter(), time.process_time()
    train_local_round(model, splits.train, job, seed=seed, privacy_state=state)
    return time.perf_counter() - start, time.process_time() - start_cpu


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Run the benchmark and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--task", default="classification")
    parser.add_argument("--model", default=None, help="default: the task's default network")
    parser.add_argument("--norm", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--unit", default="auto", help="privacy.unit: auto, patient or image")
    parser.add_argument(
        "--train-images", type=int, default=None, help="train on the first N images only"
    )
    args = parser.parse_args()
    data = args.data or write_synthetic_lesions(Path("data/synthetic-lesions.npz"))
    splits = load_dataset(data)
    if args.train_images:
        splits = replace(splits, train=splits.train.subset(np.arange(args.train_images)))
    jobs = {dp: _job(args, dp) for dp in (False, True)}
    state, calibration_cpu = _calibrated_state(jobs[True], splits)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    peak_plain = 0.0
    for repeat in range(args.repeats):
        for dp, job in jobs.items():
            wall, used = _epoch_seconds(job, splits, seed=repeat, state=state if dp else None)
            seconds[dp].append(wall)
            cpu[dp].append(used)
            peak_plain = peak_plain or _peak_mib()
    ratios = [private / plain for plain, private in zip(seconds[False], seconds[True], strict=True)]
    cpu_ratios = [private / plain for plain, private in zip(cpu[False], cpu[True], strict=True)]
    job = jobs[True]
    probe = build_model(job.model, splits.in_channels, 2, splits.image_size, True)
    blockers = fast_path_blockers(probe)
    path = f"Opacus GradSampleModule ({', '.join(blockers)})" if blockers else "book-keeping"
    print(
        f"data={data} task={job.task} model={job.model.name} norm={job.model.norm} "
        f"train images={len(splits.train)} batch={args.batch_size} "
        f"threads={torch.get_num_threads()} repeats={args.repeats} unit={state.unit} "
        f"per-sample gradients: {path}"
    )
    print(
        f"no DP: {statistics.median(seconds[False]):.2f} s/epoch   "
        f"DP-SGD: {statistics.median(seconds[True]):.2f} s/epoch (medians)"
    )
    print(
        f"noise multiplier {state.noise_multiplier:.4f} for epsilon {job.privacy.target_epsilon} "
        f"({job.privacy.accountant}), calibrated once per job in {calibration_cpu:.2f} s CPU "
        "(not in the DP epoch)"
    )
    print("ratios of the repeats: " + " ".join(f"{r:.2f}" for r in ratios))
    print(f"DP / no-DP epoch time ratio: {statistics.median(ratios):.2f} (median)")
    print(
        f"CPU time ratio: {statistics.median(cpu_ratios):.2f} (median); peak RSS after the first "
        f"no-DP epoch {peak_plain:.0f} MiB, at the end {_peak_mib():.0f} MiB"
    )


if __name__ == "__main__":
    main()
