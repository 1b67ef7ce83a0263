"""A prepared cache's arrays grouped by a manifest column (series or study), in slice order."""

import csv
from pathlib import Path

import numpy as np


def cached_images_by(cache: Path, column: str, kind: str = "images") -> dict[str, np.ndarray]:
    """The cached ``kind`` ("images" or "masks") of ``cache`` stacked per value of ``column``."""
    data = np.load(cache / "dataset.npz")
    position: dict[str, int] = {}
    found: dict[str, list[np.ndarray]] = {}
    with (cache / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            index = position.setdefault(row["split"], 0)
            position[row["split"]] += 1
            found.setdefault(row[column], []).append(data[f"{row['split']}_{kind}"][index])
    return {key: np.stack(arrays) for key, arrays in found.items()}
