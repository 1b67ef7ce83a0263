"""Benchmark: `prepare` throughput against bare pydicom decoding, and cached vs decoded epochs.

Usage: .venv/bin/python bench/prepare_throughput.py [--series 20] [--slices 40] [--size 256]
    [--modality CT|MR ...]
For each modality (CT in Hounsfield units, windowed by a preset; MR, scaled by percentiles)
writes a generated DICOM export to a temporary folder, then, in one run, measures
  1. bare decode: pydicom.dcmread + pixel_array of every file (slices/s),
  2. prepare, as `medfed-site prepare` runs it: one read per file (header + decode + QC
     statistics + resampling taps), then windowing and resampling per series (slices/s),
  3. an epoch from the cache (reading dataset.npz, then the DataLoader; and a further epoch
     from the loaded arrays) against an epoch that decodes and preprocesses the DICOM again,
and prints the ratios (goals: prepare >= 0.8 of bare decode; cached epoch >= 10x faster).
"""

import argparse
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

from common.data.dicom_prepare import PreprocessingConfig, prepare_series, read_dicom_folder
from common.data.label_manifest import LabelManifest
from common.data.loading import load_dataset
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import QualityReport
from common.data.site_cache import write_site_cache
from common.tasks.training import make_loader
from simulations.dicom_writer import SeriesIdentity, write_dicom_series


def _export(root: Path, series: int, slices: int, size: int, modality: str) -> LabelManifest:
    """CT in HU (stored + intercept -1024: a window preset) or MR (percentile scaling)."""
    rng = np.random.default_rng(0)
    labels = {}
    rescale = (1.0, -1024.0) if modality == "CT" else (1.0, 0.0)
    for i in range(series):
        identity = SeriesIdentity(modality=modality)
        volume = 1000 + rng.normal(0, 30, (slices, size, size))
        write_dicom_series(volume, (2.0, 0.7, 0.7), root / f"s{i}", identity, rescale)
        labels[identity.series_uid] = str(i % 2)
    return LabelManifest("SeriesInstanceUID", labels, ("0", "1"))


def _prepare(root: Path, manifest: LabelManifest, size: int):  # noqa: ANN202
    report = QualityReport()
    config = PreprocessingConfig(size=size)
    scan = read_dicom_folder(root, config)
    pseudonymise = SitePseudonymiser(secrets.token_bytes(32))
    prepared = prepare_series(scan, config, manifest, pseudonymise, report)
    return prepared, report


def _measure(scratch: Path, modality: str, args: argparse.Namespace) -> None:
    """Bare decode vs prepare of one generated export; then cached vs decoded epochs."""
    root = scratch / modality
    manifest = _export(root, args.series, args.slices, args.size, modality)
    files = sorted(root.rglob("*.dcm"))
    start = time.perf_counter()
    for path in files:
        pydicom.dcmread(path).pixel_array  # noqa: B018
    bare = time.perf_counter() - start

    start = time.perf_counter()
    prepared, report = _prepare(root, manifest, args.out_size)
    prepare_seconds = time.perf_counter() - start
    cache = scratch / f"cache-{modality}"
    write_site_cache(cache, prepared, manifest.class_names, report)

    start = time.perf_counter()
    splits = load_dataset(cache)
    loaded = time.perf_counter()
    for _ in make_loader(splits.train.images, splits.train.labels, 32, shuffle=True, seed=0):
        pass
    done = time.perf_counter()
    cached_epoch, in_memory_epoch = done - start, done - loaded
    # An uncached epoch must decode and preprocess the same images again.
    uncached_epoch = prepare_seconds * len(splits.train) / len(prepared.labels)

    n = len(files)
    window = PreprocessingConfig().window_for(modality)
    print(f"{modality} ({window} scaling): {n} DICOM files of {args.size}x{args.size}, cached at "
          f"{args.out_size}x{args.out_size}")  # fmt: skip
    print(f"  bare pydicom decode: {n / bare:.0f} slices/s")
    print(f"  prepare (one read per file, then per series): {n / prepare_seconds:.0f} slices/s")
    print(f"  prepare / bare decode throughput ratio: {bare / prepare_seconds:.2f}")
    print(
        f"  epoch decoding DICOM: {uncached_epoch:.3f} s; from the cache: {cached_epoch:.3f} s "
        f"read + first epoch, {in_memory_epoch:.4f} s each further epoch"
    )
    print(
        f"  cached epoch speed-up: {uncached_epoch / cached_epoch:.1f}x with the cache read, "
        f"{uncached_epoch / in_memory_epoch:.0f}x once loaded"
    )


def main() -> None:
    """Run the measurements for CT (window preset) and MR (percentile scaling)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--size", type=int, default=256, help="DICOM image side")
    parser.add_argument("--out-size", type=int, default=64, help="cached image side")
    parser.add_argument("--modality", choices=["CT", "MR"], action="append")
    args = parser.parse_args()
    modalities = args.modality or ["CT", "MR"]
    if len(modalities) > 1:  # each in a fresh process: a second one in the same heap ran slower
        sizes = ["--series", args.series, "--slices", args.slices, "--size", args.size]
        sizes += ["--out-size", args.out_size]
        for modality in modalities:
            command = [sys.executable, __file__, *map(str, sizes), "--modality", modality]
            subprocess.run(command, check=True)  # noqa: S603
        return
    with tempfile.TemporaryDirectory() as scratch:
        _measure(Path(scratch), modalities[0], args)


if __name__ == "__main__":
    main()
