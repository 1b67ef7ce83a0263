"""A site sends its validation score counts only when the threshold is chosen from them."""

from pathlib import Path

import pytest
import torch
from flwr.app import Context, RecordDict

from client.site_client import SiteClient
from client.site_limits import SiteLimits
from common import message_keys as keys
from common.federation_job import FederationJob
from common.model_packing import pack_arrays
from common.models import build_model
from simulations.synthetic_lesions import write_synthetic_lesions


@pytest.mark.parametrize("threshold_data", [False, True])
def test_counts_leave_the_site_only_without_threshold_data(
    tmp_path: Path, threshold_data: bool
) -> None:
    data = write_synthetic_lesions(
        tmp_path / "site.npz", n_train=16, n_val=12, n_test=4, image_size=16
    )
    job = FederationJob.model_validate(
        {"image_size": 16, "threshold_data": str(data) if threshold_data else ""}
    )
    torch.manual_seed(0)
    model = build_model(job.model, 1, 2, (16, 16), True)
    parameters = [t.numpy().copy() for t in model.state_dict().values()]
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    limits = SiteLimits(
        data=data, name="hospital-a", max_epsilon=10.0, require_dp=False,
        require_secure_aggregation=False,
    )  # fmt: skip
    client = SiteClient(context, seed_for_round=lambda _round: 0, job=job, limits=limits)
    _, examples, metrics = client.evaluate([pack_arrays(parameters)], {keys.SERVER_ROUND: 1})
    assert examples == 12 and "roc_auc" in metrics
    assert (keys.SCORE_COUNTS in metrics) is not threshold_data
