"""A site's float16 update: the same training, half the reply's bytes, entries within rounding."""

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common.recorddict_compat import fitres_to_recorddict

from client.flower_internals import recorddict_to_proto
from client.site_client import SiteClient
from client.site_limits import SiteLimits
from common import message_keys as keys
from common.errors import MedfedError
from common.federation_job import FederationJob
from common.model_packing import pack_arrays
from common.models import build_model
from simulations.synthetic_lesions import write_synthetic_lesions


def _site_client(data: Path, job: FederationJob) -> SiteClient:
    """Hospital-a's real site client, requiring neither DP nor SecAgg+."""
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    limits = SiteLimits(
        data=data, name="hospital-a", max_epsilon=10.0, require_dp=False,
        require_secure_aggregation=False,
    )  # fmt: skip
    return SiteClient(context, seed_for_round=lambda _round: 0, job=job, limits=limits)


def _fit(data: Path, precision: str) -> tuple[list[np.ndarray], bytes, int]:
    """One plain round of the real site client: its delta, serialised reply, model bytes."""
    job = FederationJob.model_validate(
        {
            "rounds": 1,
            "image_size": 32,
            "update_precision": precision,
            "privacy": {"enabled": False},
            "secure_aggregation": {"enabled": False},
        }
    )
    torch.manual_seed(0)  # the same global model for both precisions
    model = build_model(job.model, 1, 2, (32, 32), False)
    start = [t.numpy().copy() for t in model.state_dict().values()]
    client = _site_client(data, job)
    delta, examples, metrics = client.fit([pack_arrays(start)], {keys.SERVER_ROUND: 1})
    reply = FitRes(Status(Code.OK, "Success"), ndarrays_to_parameters(delta), examples, metrics)
    wire = recorddict_to_proto(fitres_to_recorddict(reply, False)).SerializeToString()
    return delta, wire, 4 * sum(a.size for a in start)


@pytest.fixture(scope="module")
def replies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    data = write_synthetic_lesions(
        tmp_path_factory.mktemp("data") / "lesions.npz", n_train=64, n_val=16, n_test=8
    )
    return {precision: _fit(data, precision) for precision in ("float32", "float16")}


def test_a_float16_reply_is_half_the_float32_model(replies: dict[str, tuple]) -> None:
    delta, wire, model_bytes = replies["float16"]
    assert {d.dtype for d in delta} == {np.dtype(np.float16)}
    assert 0.49 < len(wire) / model_bytes < 0.52, len(wire) / model_bytes
    _, wire32, _ = replies["float32"]
    assert 1.0 < len(wire32) / model_bytes < 1.02


def test_the_float16_delta_is_the_float32_one_rounded(replies: dict[str, tuple]) -> None:
    """Same seed, same training: each entry differs by float16 rounding (2**-11 relative)."""
    half, _, _ = replies["float16"]
    full, _, _ = replies["float32"]
    for h, f in zip(half, full, strict=True):
        assert np.array_equal(h, f.astype(np.float16))
    pairs = zip(half, full, strict=True)
    error = np.sqrt(sum(np.square(h.astype(np.float64) - f).sum() for h, f in pairs))
    norm = np.sqrt(sum(np.square(f, dtype=np.float64).sum() for f in full))
    assert 0 < error / norm < 2**-11


def test_a_global_model_that_does_not_fit_the_job_is_refused_before_training(
    tmp_path: Path,
) -> None:
    """A coordinator's model of another layout, or sent unpacked, never reaches training."""
    data = write_synthetic_lesions(tmp_path / "lesions.npz", n_train=8, n_val=4, n_test=2)
    job = FederationJob.model_validate(
        {"name": "trial", "rounds": 1, "image_size": 32, "privacy": {"enabled": False},
         "secure_aggregation": {"enabled": False}}
    )  # fmt: skip
    client = _site_client(data, job)
    model = build_model(job.model, 1, 2, (32, 32), False)
    arrays = [t.numpy().copy() for t in model.state_dict().values()]
    for sent, why in (
        ([pack_arrays(arrays[:-1])], "bytes, this model's layout is"),  # a tensor short
        (arrays, f"{len(arrays)} arrays received"),  # one array per tensor, unpacked
    ):
        with pytest.raises(MedfedError, match=f"site hospital-a: .* job trial's model .*{why}"):
            client.fit(sent, {keys.SERVER_ROUND: 1})
