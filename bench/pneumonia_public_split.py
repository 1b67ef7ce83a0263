"""Split PneumoniaMNIST's official val split into a public stand-in and the hospitals' validation.

Usage: .venv/bin/python bench/pneumonia_public_split.py --data ../shared/data/pneumoniamnist.npz
[--public 424] [--seed 0] --out-public public.npz --out-hospitals hospitals.npz

PneumoniaMNIST is the only chest X-ray set on this machine. To study DP fine-tuning from weights
pretrained on data that is not the hospitals', ``--public`` images of the official **val** split
(stratified by label, ``--seed``) stand in for a public dataset: they become the train split of
``--out-public`` (its val and test splits are empty). ``--out-hospitals`` keeps the official
train split (the hospitals' training data, partitioned by ``medfed-sim run`` exactly as from the
original file) and the official test split unchanged; its val split (the sites' validation data)
is the rest of the official val split. No image is in both files, and none of the public images
is in the hospitals' train or test split. Prints the class counts of every split.
"""

import argparse
from pathlib import Path

import numpy as np

from common.data.arrays import ImageArrays
from common.data.npz_reader import read_npz
from common.data.npz_writer import write_npz


def _counts(part: ImageArrays, names: tuple[str, ...]) -> str:
    counts = np.bincount(part.labels, minlength=len(names))
    return ", ".join(f"{name} {n}" for name, n in zip(names, counts, strict=True))


def _stratified(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``size`` images drawn per class in proportion, and of the others (sorted)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        chosen.append(members[: round(size * len(members) / len(labels))])
    picked = np.sort(np.concatenate(chosen))
    return picked, np.setdiff1d(np.arange(len(labels)), picked)


def main() -> None:
    """Parse the options, write the two archives, print their class counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--public", type=int, default=424, help="val images made public")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-public", type=Path, required=True)
    parser.add_argument("--out-hospitals", type=Path, required=True)
    args = parser.parse_args()
    splits = read_npz(args.data)
    val = splits.val
    public_idx, kept_idx = _stratified(val.labels, args.public, args.seed)
    public = val.subset(public_idx)
    empty = val.subset(np.array([], dtype=np.int64))
    names = splits.class_names
    write_npz(args.out_public, {"train": public, "val": empty, "test": empty}, names)
    hospitals = {"train": splits.train, "val": val.subset(kept_idx), "test": splits.test}
    write_npz(args.out_hospitals, hospitals, names)
    print(f"{args.out_public}: train {_counts(public, names)} (from official val)")
    for name, part in hospitals.items():
        print(f"{args.out_hospitals}: {name} {_counts(part, names)}")


if __name__ == "__main__":
    main()
