"""Where a decision threshold can be chosen, and how each choice carries over to the test set.

Usage: .venv/bin/python bench/threshold_transfer.py --model CHECKPOINT --data CACHES
[--threshold-data PUBLIC]
CHECKPOINT is a binary classifier (a run's global_model.pt), CACHES the folder of site caches
it was trained on, PUBLIC labelled data that is not the hospitals' (a folder of caches, as
``--threshold-data`` takes it). Prints, per site and split, the model's ROC-AUC and median
log-odds per class (how far validation looks like test); then, for each place a threshold can
be chosen (grid threshold of highest balanced accuracy, ``common.tasks.threshold``), the
threshold and the test balanced accuracy and F1 at it. The last line chooses on the test
labels themselves: an oracle bound, not a result.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from common.checkpoint import load_checkpoint
from common.data.arrays import ImageArrays
from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks.classification import predict_probabilities
from common.tasks.threshold import choose_threshold, score_counts

_SPLITS = ("train", "val", "test")


def _describe(name: str, labels: np.ndarray, scores: np.ndarray) -> str:
    log_odds = np.log(np.clip(scores, 1e-7, 1 - 1e-7) / np.clip(1 - scores, 1e-7, 1))
    return (
        f"{name:18s} {len(labels):5d} slices, {labels.mean():.2f} lesion, ROC-AUC "
        f"{roc_auc_score(labels, scores):.3f}, median log-odds no-lesion "
        f"{np.median(log_odds[labels == 0]):+.2f} lesion {np.median(log_odds[labels == 1]):+.2f}"
    )


def main() -> None:
    """Score every split, then choose the threshold on each candidate and apply it to test."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--threshold-data", default="")
    args = parser.parse_args()
    saved = load_checkpoint(Path(args.model))
    job = FederationJob.model_validate(saved["job"])
    model = build_model(job.model, job.in_channels, 2, job.spatial_shape, job.privacy.enabled)
    model.load_state_dict(saved["state_dict"])
    sites = [load_dataset(path) for path in sorted(Path(args.data).glob("site-*"))]
    scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def score(name: str, data: ImageArrays) -> None:
        scored[name] = (data.labels, predict_probabilities(model, data)[:, 1])
        print(_describe(name, *scored[name]), flush=True)

    for index, site in enumerate(sites):
        for split in _SPLITS:
            score(f"site-{index} {split}", getattr(site, split))
    for split in _SPLITS:
        parts = [scored[f"site-{k} {split}"] for k in range(len(sites))]
        scored[f"sites {split}"] = (
            np.concatenate([labels for labels, _ in parts]),
            np.concatenate([scores for _, scores in parts]),
        )
        print(_describe(f"sites {split}", *scored[f"sites {split}"]))
    candidates = ["sites val", "sites train"]
    if args.threshold_data:
        public = load_dataset(Path(args.threshold_data))
        score("public held-out", ImageArrays.concatenate([public.val, public.test]))
        score("public all", ImageArrays.concatenate([public.train, public.val, public.test]))
        candidates += ["public held-out", "public all"]
    test_labels, test_scores = scored["sites test"]
    for name in [*candidates, "sites test"]:
        threshold = choose_threshold(score_counts(*scored[name]))
        if threshold is None:
            print(f"chosen on {name}: no threshold (one class)")
            continue
        decided = test_scores >= threshold
        note = "  (oracle: chosen on the test labels)" if name == "sites test" else ""
        print(
            f"chosen on {name:16s} threshold {threshold:.3f} -> test balanced accuracy "
            f"{balanced_accuracy_score(test_labels, decided):.3f}, F1 "
            f"{f1_score(test_labels, decided):.3f}{note}"
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
