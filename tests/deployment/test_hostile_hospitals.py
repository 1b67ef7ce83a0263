"""Hostile hospitals on a real federation (127.0.0.1): the jobs finish, the model stays sane.

Two honest hospitals and three that run a modified client (tests/deployment/hostile_client:
the simulated hostile sites' ``_poisoned``, loaded into their ClientApp processes) poisoning
chosen rounds: NaN, 1e30, its delta x1000, a wrong-shaped array, 10**9 declared training
images, minus its own count of them; hospital-x's poisoned replies also give an honest
hospital's name, and every record still names it by the name it was enrolled under. One
federation for the module, two two-round jobs without DP:
- plain: round 1 NaN, 1e30 and x1000, round 2 a wrong shape, an inflated count and a
  negative one;
- SecAgg+: round 1 a wrong shape and an inflated count (those masked replies are taken out
  before Flower sums them, the round finishes with the other three), round 2 NaN, 1e30 and
  x1000 inside the masked sum (the unmasked mean fails its checks, the round keeps the
  previous model).
The stated bound: each job's global model is finite and within BOUND x (the honest model's
L2 distance from the initial one) of the honest model. The honest model is what two honest
rounds of all five sites give, computed here with every site's own training code
(SiteClient.fit on its data, its own secret seed) and the mean the coordinator takes. Sites
draw secret seeds, so two honest federations differ: the plain job, averaging two or four
sites where the honest model averages five, measured 1.17x and 1.53x in two runs, the SecAgg+
job 0.93x (its round 2 is discarded). One accepted
x1000 reply would move the model about 1000 / 5 times an honest round; one NaN, to NaN.
"""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from federation_setup import Federation, running_federation
from flwr.app import Context, RecordDict

from client.site_client import SiteClient
from client.site_limits import SiteLimits
from common import message_keys as keys
from common.checkpoint import load_checkpoint
from common.federation_job import FederationJob
from common.model_packing import pack_arrays
from common.models import build_model
from simulations.synthetic_lesions import write_synthetic_lesions

#: idle_s orders the files (tests/conftest.py), from the idle run's durations (2026-11-29):
#: setup with the plain job 231 s, the SecAgg+ job 208 s.
pytestmark = pytest.mark.e2e(idle_s=440)

HONEST = ("hospital-a", "hospital-b")
#: Hostile hospital -> job -> round -> how it poisons that reply (HOSTILE_KINDS).
PLANS = {
    "hospital-x": {"plain": {"1": "nan", "2": "wrong-shape"},
                   "secure": {"1": "wrong-shape", "2": "nan"}},
    "hospital-y": {"plain": {"1": "huge", "2": "inflated-examples"},
                   "secure": {"1": "inflated-examples", "2": "huge"}},
    "hospital-z": {"plain": {"1": "scale1000", "2": "negative-examples"},
                   "secure": {"2": "scale1000"}},
}  # fmt: skip
SITES = (*HONEST, *PLANS)
#: hospital-x's poisoned replies name it as an honest hospital: the records must not.
IMPERSONATED = {"hospital-x": "hospital-a"}
HOSTILE_CLIENT = Path(__file__).parent / "hostile_client"
ROUNDS = 2
#: Farthest a hostile job's model may be from the honest model, in honest movements.
BOUND = 3.0

JOB = """
name = "{name}"
rounds = 2
min_sites = 2
image_size = 32
seed = 3

[train]
batch_size = 32
learning_rate = 0.003

[privacy]
enabled = false

[secure_aggregation]
enabled = {secure}
reconstruction_threshold = 0.5
max_weight = 200  # near the largest site (96 training images), as docs/security.md advises
timeout_s = 300.0  # far above an idle stage: see federation_setup.JOB
"""


def _site_env(site: str) -> dict[str, str] | None:
    if site not in PLANS:
        return None
    path = os.pathsep.join(filter(None, [str(HOSTILE_CLIENT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "MEDFED_TEST_HOSTILE": json.dumps(PLANS[site])}
    if site in IMPERSONATED:
        env["MEDFED_TEST_HOSTILE_NAME"] = IMPERSONATED[site]
    return env


def _no_dp_required(_site: str, text: str) -> str:
    # These hospitals allow jobs without DP or SecAgg+ (so one run is comparable with another).
    return text.replace(
        "require-secure-aggregation = true", "require-secure-aggregation = false"
    ).replace("require-dp = true", "require-dp = false")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("hostile-federation")
    data = {site: root / f"{site}.npz" for site in SITES}
    for index, path in enumerate(data.values()):
        write_synthetic_lesions(path, n_train=96, n_val=16, n_test=8, seed=index)
    with running_federation(root, data, _no_dp_required, _site_env) as fed:
        yield fed


def _run(federation: Federation, name: str, secure: bool) -> Path:
    job = JOB.format(name=name, secure=str(secure).lower())
    run = federation.submit(name, job)
    output, _ = run.communicate(timeout=540)
    assert run.returncode == 0, output[-4000:]
    return federation.run_dir(name)


def _arrays(state: dict[str, torch.Tensor]) -> list[np.ndarray]:
    return [t.detach().numpy().astype(np.float64) for t in state.values()]


def _distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.square(x - y).sum() for x, y in zip(a, b, strict=True))))


@pytest.fixture(scope="module")
def plain(federation: Federation) -> Path:
    return _run(federation, "plain", secure=False)


@pytest.fixture(scope="module")
def honest(federation: Federation, plain: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(initial model, honest model): two honest rounds of every site, computed here."""
    job = FederationJob.model_validate(load_checkpoint(plain / "global_model.pt")["job"])
    torch.manual_seed(job.seed)  # as the ServerApp builds the initial model
    initial = _arrays(build_model(job.model, 1, 2, (32, 32), False).state_dict())
    clients = [
        SiteClient(
            Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
            job=job,
            limits=SiteLimits(
                data=federation.root / f"{site}.npz",
                name=site,
                max_epsilon=8.0,
                require_secure_aggregation=False,
                require_dp=False,
            ),
        )  # fmt: skip
        for site in SITES
    ]
    model = initial
    for server_round in range(1, ROUNDS + 1):
        packed = [pack_arrays([a.astype(np.float32) for a in model])]  # as the coordinator sends
        sent = [client.fit(packed, {keys.SERVER_ROUND: server_round}) for client in clients]
        weights = [count for _, count, _ in sent]
        deltas = zip(*(delta for delta, _, _ in sent), strict=True)
        mean = [np.average(np.stack(d), axis=0, weights=weights) for d in deltas]
        model = [m + d for m, d in zip(model, mean, strict=True)]
    return initial, model


def _check_model(run_dir: Path, honest: tuple[list, list]) -> tuple[float, float]:
    """(distance to the honest model, the honest model's distance from the initial one)."""
    initial, reference = honest
    model = _arrays(load_checkpoint(run_dir / "global_model.pt")["state_dict"])
    assert all(np.isfinite(a).all() for a in model)
    moved, distance = _distance(reference, initial), _distance(model, reference)
    print(f"{run_dir.name}: {distance:.4g} from the honest model, which moved {moved:.4g}")
    assert _distance(model, initial) > 0  # the honest sites' rounds reached the model
    assert distance <= BOUND * moved, (distance, moved)
    return distance, moved


def _rejections(run_dir: Path) -> list[dict[str, Any]]:
    return json.loads((run_dir / "metrics.json").read_text())["rejections"]


def _by_round(run_dir: Path) -> dict[int, dict[str, str]]:
    """Round -> rejected site -> reason, from the run folder's metrics.json."""
    found: dict[int, dict[str, str]] = {r: {} for r in range(1, ROUNDS + 1)}
    for rejection in _rejections(run_dir):
        found[rejection["round"]][rejection["site"]] = rejection["reason"]
    return found


def test_plain_rounds_reject_each_poisoned_update_by_name(
    plain: Path, honest: tuple[list, list]
) -> None:
    rejected = _by_round(plain)
    assert set(rejected[1]) == set(PLANS), rejected
    assert "non-finite" in rejected[1]["hospital-x"]
    assert "beyond" in rejected[1]["hospital-y"] and "beyond" in rejected[1]["hospital-z"]
    assert set(rejected[2]) == {"hospital-x", "hospital-z"}, rejected
    assert "shape" in rejected[2]["hospital-x"]
    assert "its reply declares -" in rejected[2]["hospital-z"]  # minus its training images
    # 10**9 declared images are taken as max_weight (200): a weight, not a takeover.
    sites = json.loads((plain / "metrics.json").read_text())["sites"]
    claimed = {(s["round"], s["site"]): s["num-examples"] for s in sites if s["phase"] == "train"}
    assert claimed[(2, "hospital-y")] == 10**9
    # hospital-x's poisoned replies said "hospital-a": every record names it by its enrolment.
    named = {(s["node_id"], s["site"]) for s in sites}
    assert len(named) == len(SITES) and {site for _, site in named} == set(SITES), named
    log = (plain / "run.log").read_text()
    assert "enrolled as hospital-x, names itself 'hospital-a'; recorded as hospital-x" in log
    _check_model(plain, honest)


def test_secure_rounds_drop_malformed_replies_and_discard_a_poisoned_sum(
    federation: Federation, honest: tuple[list, list]
) -> None:
    run_dir = _run(federation, "secure", secure=True)
    log = (run_dir / "run.log").read_text()
    # Round 1 sums the three well-formed masked replies, round 2 all five (protocol complete).
    assert log.count("[Stage 2] Received masked vectors from 3 clients") == 1, log[-3000:]
    assert log.count("[Stage 2] Received masked vectors from 5 clients") == 1, log[-3000:]
    rejected = _by_round(run_dir)
    # Round 1: the two malformed masked replies are taken out, the other three are summed.
    assert set(rejected[1]) == {"hospital-x", "hospital-y"}, rejected
    assert "masked array 0 has " in rejected[1]["hospital-x"]
    assert "bytes where shape" in rejected[1]["hospital-x"]
    assert "max_weight" in rejected[1]["hospital-y"]
    train = json.loads((run_dir / "metrics.json").read_text())["federated"]["train"]
    assert "1" in train  # round 1 was aggregated
    # Round 2: NaN, 1e30 and x1000 inside the masked sum: the unmasked mean is refused.
    assert {*HONEST, "hospital-z"} <= set(rejected[2]), rejected
    assert all("the unmasked SecAgg+ sum" in r for r in rejected[2].values()), rejected
    assert "2" not in train
    _check_model(run_dir, honest)
