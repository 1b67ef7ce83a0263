"""Benchmark: a 2D segmentation model's slices stacked into volumes against 3D models, same metrics.

Usage: .venv/bin/python bench/volume_vs_slices.py --volumes VOLUME_CACHE --model-2d CKPT
       [--model-3d NAME=CKPT ...] [--split test] [--format markdown|json]
VOLUME_CACHE is a cache (or a folder of site caches) from `medfed-site prepare --dims 3`; CKPT
a medfed checkpoint (a run's global_model.pt, or a baseline's). The 2D model must have been
trained on slices prepared like the volumes (same window, spacing, size, channels: refused
otherwise); it segments every axial slice of each volume of the split, the slices are stacked
on the volume's grid (common.tasks.slice_stacking) and scored with the volumes' own metrics
(common.tasks.volume_metrics: Dice, IoU, HD95 and ASD in mm, lesion-wise detection), as each
3D model is by its sliding-window evaluation (common.tasks.volume_segmentation.evaluate).
Prints one row per model.
"""

import argparse
import json
import math
from pathlib import Path

from client.inference.model import TrainedModel, load_trained_model
from common.data.loading import load_dataset
from common.tasks.segmentation import targets
from common.tasks.slice_stacking import check_same_preprocessing, predict_by_slices
from common.tasks.volume_metrics import VOLUME_METRICS, volume_metrics
from common.tasks.volume_segmentation import evaluate, volume_spacings

_COLUMNS = VOLUME_METRICS


def _model(path: Path, task: str) -> TrainedModel:
    model = load_trained_model(path)
    if model.task != task:
        raise SystemExit(f"{path}: a {model.task} model, expected {task}")
    return model


def main() -> None:
    """Score the 2D model's stacked slices and each 3D model on the same volumes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=Path, required=True)
    parser.add_argument("--model-2d", type=Path, required=True)
    parser.add_argument("--model-3d", action="append", default=[], metavar="NAME=CKPT")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    args = parser.parse_args()

    splits = load_dataset(args.volumes)
    data = getattr(splits, args.split)
    names = tuple(splits.segment_names or ("background", "lesion"))
    flat = _model(args.model_2d, "segmentation")
    check_same_preprocessing(flat.preprocessing, splits.preprocessing)
    predicted = predict_by_slices(flat.network, data.images)
    rows = {
        f"2D {flat.model_name}, slices stacked": volume_metrics(
            targets(data), predicted, volume_spacings(data), names
        )
    }
    for item in args.model_3d:
        label, _, path = item.partition("=")
        volume_model = _model(Path(path), "segmentation-3d")
        rows[f"3D {label}"] = evaluate(volume_model.network, data, names)

    if args.format == "json":
        print(json.dumps({"volumes": len(data), "models": rows}, indent=2))
        return
    print(f"{len(data)} {args.split} volumes of {args.volumes}")
    print("| model | " + " | ".join(_COLUMNS) + " |")
    print("|---" * (len(_COLUMNS) + 1) + "|")
    for label, metrics in rows.items():
        cells = [metrics.get(c, math.nan) for c in _COLUMNS]
        print(
            f"| {label} | " + " | ".join(f"{v:.3f}" if v % 1 else f"{v:.0f}" for v in cells) + " |"
        )


if __name__ == "__main__":
    main()
