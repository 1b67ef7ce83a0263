"""The coordinator's own threshold data decides the threshold; the sites' counts do not."""

from pathlib import Path

import numpy as np
import torch
from flwr.common import Code, EvaluateRes, Status
from site_replies import SiteProxy
from sklearn.metrics import balanced_accuracy_score

from common import message_keys as keys
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks.classification import predict_probabilities
from common.tasks.threshold import THRESHOLDS, choose_threshold, encode_counts
from common.threshold_data import load_threshold_data
from server.data_threshold import DataThreshold
from server.run_recorder import RunRecorder
from server.strategies import DeltaFedAvg, RoundHooks
from simulations.synthetic_lesions import write_synthetic_lesions


def test_the_threshold_is_the_best_on_the_coordinators_data_whatever_the_sites_count(
    tmp_path: Path,
) -> None:
    public = write_synthetic_lesions(
        tmp_path / "public.npz", n_train=60, n_val=20, n_test=40, image_size=16, seed=5
    )
    job = FederationJob.model_validate(
        {"image_size": 16, "threshold_data": str(public), "secure_aggregation": {"enabled": False}}
    )
    torch.manual_seed(1)
    model = build_model(job.model, 1, 2, (16, 16), dp_enabled=True)
    data = load_threshold_data(job)
    assert data is not None
    hooks = RoundHooks(checkpoint=lambda *_: None, threshold=DataThreshold(job, data))
    strategy = DeltaFedAvg(job, model.state_dict(), RunRecorder(tmp_path / "run", 1), hooks, 1)
    counts = np.zeros((2, len(THRESHOLDS) + 1), dtype=np.int64)
    counts[0, 0], counts[1, -1] = 30, 10  # a site's counts that would choose the lowest grid point
    proxy = SiteProxy("1")
    proxy.node_id = 1
    metrics = {keys.SITE_NAME: "site-1", keys.SCORE_COUNTS: encode_counts(counts)}
    strategy._sampled = [1]
    _, aggregated = strategy.aggregate_evaluate(
        1, [(proxy, EvaluateRes(Status(Code.OK, ""), 0.5, 40, metrics))], []
    )
    scores = predict_probabilities(model.eval(), data)[:, 1]
    by_sklearn = [balanced_accuracy_score(data.labels, scores >= t) for t in THRESHOLDS]
    assert aggregated["threshold"] == THRESHOLDS[int(np.argmax(by_sklearn))]
    assert aggregated["threshold"] != choose_threshold(counts)
