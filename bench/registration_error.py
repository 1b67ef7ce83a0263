"""Benchmark: target registration error (TRE) of prepare's registration on generated studies.

Usage: .venv/bin/python bench/registration_error.py --data DIR [--sites 3] [--subjects 3]
       [--transform affine]
Writes multi-sequence studies (T1, T2, FLAIR; medfed-sim generate --sequences) whose true
transforms are known, aligns each study as ``prepare --register atlas --sequences`` does
(common.data.study_alignment), and prints the TRE in mm over atlas brain points (every 7th
voxel of the MNI152 brain mask), before (identity) and after registration: mean and 95th
percentile over all points of all series, per sequence and overall, and seconds per series.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from nilearn.datasets import load_mni152_brain_mask

from common.data.atlas import atlas_image
from common.data.dicom_scan import scan_dicom_folder
from common.data.sequences import group_by_sequence, parse_sequences
from common.data.series_volume import VolumeReader, series_volume
from common.data.study_alignment import align_study
from simulations.brain_sequences import TRUTH_FILE, write_sequence_sites

_SEQUENCES = ("T1", "T2", "FLAIR")


def _brain_points() -> np.ndarray:
    mask = load_mni152_brain_mask(resolution=2)
    index = np.argwhere(mask.get_fdata() > 0.5)[::7]
    to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ mask.affine
    return (to_lps @ np.c_[index, np.ones(len(index))].T).T[:, :3]


def _error(to_template: np.ndarray, points: np.ndarray, mapped: np.ndarray) -> np.ndarray:
    """|G(T(x)) - x| for atlas points x, T(x) = ``mapped`` in the series, G the truth."""
    moved = (to_template @ np.c_[mapped, np.ones(len(mapped))].T).T[:, :3]
    return np.linalg.norm(moved - points, axis=1)


def main() -> None:
    """Generate, register and print the errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--transform", default="affine", choices=("rigid", "affine"))
    args = parser.parse_args()
    if not args.data.exists():
        write_sequence_sites(args.data, _SEQUENCES, args.sites, args.subjects, seed=1)
    atlas, points = atlas_image(), _brain_points()
    rule = parse_sequences(",".join(f"{s}={s}" for s in _SEQUENCES))
    before: dict[str, list[np.ndarray]] = {s: [] for s in _SEQUENCES}
    after: dict[str, list[np.ndarray]] = {s: [] for s in _SEQUENCES}
    seconds: list[float] = []
    for site in sorted(args.data.glob("site-*")):
        truth = json.loads((site / TRUTH_FILE).read_text())["subjects"]
        scan = scan_dicom_folder(site / "dicom", read_image=VolumeReader())
        for study in group_by_sequence(scan.series.values(), rule):
            subject = study.series["T1"][0].slices[0].path.parent.parent.name
            images = [series_volume(study.series[s][0], None).image for s in _SEQUENCES]
            start = time.perf_counter()
            alignments = align_study(images, atlas, args.transform)
            seconds.append((time.perf_counter() - start) / len(images))
            for name, alignment in zip(_SEQUENCES, alignments, strict=True):
                truth_matrix = np.asarray(truth[subject][name])
                mapped = np.array([alignment.transform.TransformPoint(tuple(p)) for p in points])
                before[name].append(_error(truth_matrix, points, points))
                after[name].append(_error(truth_matrix, points, mapped))
            print(f"{site.name} {subject}: {seconds[-1]:.1f} s per series", flush=True)
    print("| sequence | series | TRE before mean / p95 (mm) | TRE after mean / p95 (mm) |")
    print("|---|---|---|---|")
    for name in (*_SEQUENCES, "all"):
        keys = _SEQUENCES if name == "all" else (name,)
        b = np.concatenate([e for k in keys for e in before[k]])
        a = np.concatenate([e for k in keys for e in after[k]])
        count = sum(len(after[k]) for k in keys)
        print(
            f"| {name} | {count} | {b.mean():.2f} / {np.percentile(b, 95):.2f} | "
            f"{a.mean():.2f} / {np.percentile(a, 95):.2f} |"
        )
    print(
        f"seconds per series (wall, incl. co-registration): median {np.median(seconds):.1f}, "
        f"max {np.max(seconds):.1f}"
    )


if __name__ == "__main__":
    main()
