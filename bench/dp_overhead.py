"""Benchmark: one local epoch with DP-SGD over one without, on the same data, in one run.

Usage: .venv/bin/python bench/dp_overhead.py [--data PATH] [--task classification]
       [--model cnn] [--norm group] [--batch-size 32] [--repeats 3]
Prints seconds per epoch for each setting and the DP / no-DP ratio (median of the repeats),
in wall-clock and in this process's CPU time (steadier on a shared machine), and the peak
resident memory after the no-DP epochs and after the DP ones (DP runs second).
Segmentation: --task segmentation --model basicunet|unet --data CACHE_WITH_MASKS.
Volumes: --task segmentation-3d --data CACHE (prepared with --dims 3; trains on patches).
"""

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch

from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.models import build_model
from common.tasks.registry import task_for
from simulations.synthetic_lesions import write_synthetic_lesions


def _epoch_seconds(job: FederationJob, data_path: Path, repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of one local epoch."""
    splits = load_dataset(data_path)
    outputs = len(task_for(job.task).output_names(splits))
    times, cpu = [], []
    for repeat in range(repeats):
        torch.manual_seed(repeat)
        model = build_model(
            job.model, splits.in_channels, outputs, splits.image_size, job.privacy.enabled
        )
        start, start_cpu = time.perf_counter(), time.process_time()
        train_local_round(model, splits.train, job, seed=repeat, privacy_state=None)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), statistics.median(cpu)


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
    args = parser.parse_args()
    data = args.data or write_synthetic_lesions(Path("data/synthetic-lesions.npz"))
    seconds, cpu, peak = {}, {}, {}
    for dp in (False, True):
        model = {k: v for k, v in (("name", args.model), ("norm", args.norm)) if v}
        job = FederationJob.model_validate(
            {
                "task": args.task,
                "model": model,
                "train": {"batch_size": args.batch_size},
                "privacy": {"enabled": dp},
            }
        )
        seconds[dp], cpu[dp] = _epoch_seconds(job, data, args.repeats)
        peak[dp] = _peak_mib()
    print(
        f"data={data} task={job.task} model={job.model.name} norm={job.model.norm} "
        f"batch={args.batch_size} threads={torch.get_num_threads()}"
    )
    print(f"no DP: {seconds[False]:.2f} s/epoch   DP-SGD: {seconds[True]:.2f} s/epoch")
    print(f"DP / no-DP epoch time ratio: {seconds[True] / seconds[False]:.2f}")
    print(
        f"CPU time: no DP {cpu[False]:.2f} s, DP-SGD {cpu[True]:.2f} s, ratio "
        f"{cpu[True] / cpu[False]:.2f}; peak RSS after no DP {peak[False]:.0f} MiB, "
        f"after DP {peak[True]:.0f} MiB"
    )


if __name__ == "__main__":
    main()
