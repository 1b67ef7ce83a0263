"""Benchmark: `prepare` throughput against bare pydicom decoding, and cached vs decoded epochs.

Usage: .venv/bin/python bench/prepare_throughput.py [--series 20] [--slices 40] [--size 256]
Writes a generated DICOM export to a temporary folder, then, in one run, measures
  1. bare decode: pydicom.dcmread + pixel_array of every file (slices/s),
  2. prepare, as `medfed-site prepare` runs it: one read per file (header + decode + QC
     statistics + resampling taps), then windowing and resampling per series (slices/s),
  3. an epoch read from the cache (dataset.npz via the DataLoader) against an epoch that
     decodes and preprocesses the DICOM files again,
and prints the ratios (goals: prepare >= 0.8 of bare decode; cached epoch >= 10x faster).
"""

import argparse
import secrets
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


def _export(root: Path, series: int, slices: int, size: int) -> LabelManifest:
    rng = np.random.default_rng(0)
    labels = {}
    for i in range(series):
        identity = SeriesIdentity(modality="CT")
        volume = 1000 + rng.normal(0, 30, (slices, size, size))
        write_dicom_series(volume, (2.0, 0.7, 0.7), root / f"s{i}", identity, (1.0, -1024.0))
        labels[identity.series_uid] = str(i % 2)
    return LabelManifest("SeriesInstanceUID", labels, ("0", "1"))


def _prepare(root: Path, manifest: LabelManifest, size: int):  # noqa: ANN202
    report = QualityReport()
    config = PreprocessingConfig(size=size)
    scan = read_dicom_folder(root, config)
    pseudonymise = SitePseudonymiser(secrets.token_bytes(32))
    prepared = prepare_series(scan, config, manifest, pseudonymise, report)
    return prepared, report


def main() -> None:
    """Run the three measurements and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--size", type=int, default=256, help="DICOM image side")
    parser.add_argument("--out-size", type=int, default=64, help="cached image side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "export"
        manifest = _export(root, args.series, args.slices, args.size)
        files = sorted(root.rglob("*.dcm"))
        start = time.perf_counter()
        for path in files:
            pydicom.dcmread(path).pixel_array  # noqa: B018
        bare = time.perf_counter() - start

        start = time.perf_counter()
        prepared, report = _prepare(root, manifest, args.out_size)
        prepare_seconds = time.perf_counter() - start
        write_site_cache(Path(scratch) / "cache", prepared, manifest.class_names, report)

        start = time.perf_counter()
        splits = load_dataset(Path(scratch) / "cache")
        for _ in make_loader(splits.train.images, splits.train.labels, 32, shuffle=True, seed=0):
            pass
        cached_epoch = time.perf_counter() - start
        # An uncached epoch must decode and preprocess the same images again.
        uncached_epoch = prepare_seconds * len(splits.train) / len(prepared.labels)

    n = len(files)
    print(f"{n} DICOM files of {args.size}x{args.size}, cached at {args.out_size}x{args.out_size}")
    print(f"bare pydicom decode: {n / bare:.0f} slices/s")
    print(f"prepare (one read per file, then per series): {n / prepare_seconds:.0f} slices/s")
    print(f"prepare / bare decode throughput ratio: {bare / prepare_seconds:.2f}")
    print(f"epoch from cache: {cached_epoch:.3f} s; epoch decoding DICOM: {uncached_epoch:.3f} s")
    print(f"cached epoch speed-up: {uncached_epoch / cached_epoch:.1f}x")


if __name__ == "__main__":
    main()
