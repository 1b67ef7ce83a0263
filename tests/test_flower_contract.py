"""What medfed takes from Flower's internals, checked: a Flower upgrade that moves it fails here.

Only client/flower_internals.py and server/secure_rounds.py touch Flower's internals (SecAgg+
exists only on the legacy path in flwr 1.41); these tests pin what they rely on.
"""

import inspect
import subprocess
import time
from importlib.metadata import version

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    factor_extract,
    parameters_mod,
    parameters_multiply,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.compat.common.recorddict_compat import fitres_to_recorddict, recorddict_to_fitres
from flwr.server import ServerConfig
from flwr.server.workflow import SecAggPlusWorkflow

from client import flower_internals, site_supernode
from common.federation_job import SecureAggregationConfig
from common.masked_packing import pack_masked, quantization_levels, unpack_masked
from common.update_encoding import decode_update, encode_update
from server import secure_rounds


def test_the_verified_flower_release_is_installed() -> None:
    # STACK-NOTES.md verified 1.41.0; on an upgrade re-check the tests below and the notes.
    assert version("flwr") == "1.41.0"


def test_secagg_record_keys_and_stage_names_the_site_reads() -> None:
    key = flower_internals.Key
    assert flower_internals.RECORD_KEY_CONFIGS == "secaggplus_configs"
    assert flower_internals.RECORD_KEY_STATE == "secaggplus_state"
    for name in ("MASKED_PARAMETERS", "MOD_RANGE", "STAGE"):
        assert isinstance(getattr(key, name), str), name
    assert callable(flower_internals.secaggplus_mod)


def test_masked_vectors_survive_the_ndarray_serde_as_uint32() -> None:
    vector = np.array([0, 1, 2**32 - 1], dtype=np.int64)
    narrowed = flower_internals.bytes_to_ndarray(
        flower_internals.ndarray_to_bytes(vector.astype(np.uint32))
    )
    assert narrowed.dtype == np.uint32 and narrowed.tolist() == vector.tolist()


def test_a_fit_reply_whose_arrays_the_site_replaces_reaches_the_strategy_as_those_arrays() -> None:
    """The plain-update mod swaps a NumPyClient's arrays for one compressed array."""
    delta = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.float32)]
    fit = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(delta), 10, {"site": "a"})
    content = fitres_to_recorddict(fit, keep_input=False)
    arrays = flower_internals.fit_arrays(content)
    assert arrays is not None and all(
        np.array_equal(a, b) for a, b in zip(arrays, delta, strict=True)
    )
    flower_internals.replace_fit_arrays(content, [encode_update(arrays)])
    received = recorddict_to_fitres(content, keep_input=True)  # the coordinator's workflow
    assert received.num_examples == 10 and received.metrics == {"site": "a"}
    (sent,) = parameters_to_ndarrays(received.parameters)
    decoded = decode_update([sent], [(2, 3), (4,)], np.dtype(np.float32))
    assert all(np.array_equal(a, b) for a, b in zip(decoded, delta, strict=True))
    assert flower_internals.fit_arrays(RecordDict()) is None  # a reply without arrays


def test_a_reply_serialises_deterministically_for_the_audit_log() -> None:
    content = RecordDict({"c": ConfigRecord({"a": 1, "b": "x"})})
    first = flower_internals.recorddict_to_proto(content).SerializeToString(deterministic=True)
    again = flower_internals.recorddict_to_proto(content).SerializeToString(deterministic=True)
    assert first == again and len(first) > 0


def test_the_legacy_workflow_takes_the_settings_a_job_gives_it() -> None:
    parameters = inspect.signature(SecAggPlusWorkflow).parameters
    for name in ("num_shares", "reconstruction_threshold", "max_weight", "clipping_range"):
        assert name in parameters, name
    assert "timeout" in parameters
    assert "round_timeout" in inspect.signature(ServerConfig).parameters
    workflow = secure_rounds._fit_workflow(SecureAggregationConfig(clipping_range=3.0), [(2,)])
    assert isinstance(workflow, SecAggPlusWorkflow) and workflow.clipping_range == 3.0
    assert secure_rounds._fit_workflow(SecureAggregationConfig(enabled=False), [(2,)]) is None


def test_the_secagg_stages_and_state_the_coordinator_checks_replies_in() -> None:
    # secure_rounds overrides two stages and wraps the grid they are given; a Flower upgrade
    # that renames a stage, adds an abstract Grid method or drops a state field fails here.
    for stage in ("setup_stage", "collect_masked_vectors_stage", "unmask_stage"):
        parameters = list(inspect.signature(getattr(SecAggPlusWorkflow, stage)).parameters)
        assert parameters == ["self", "grid", "context", "state"], (stage, parameters)
    assert not secure_rounds._CheckedGrid.__abstractmethods__
    state = secure_rounds.WorkflowState()
    for field in ("mod_range", "max_weight", "sampled_node_ids", "active_node_ids"):
        assert hasattr(state, field), field


def test_the_setup_stage_reads_the_quantisation_levels_after_sampling_the_round() -> None:
    """secure_rounds sizes the levels by the sampled sites: Flower must read them after that."""
    source = inspect.getsource(SecAggPlusWorkflow.setup_stage)
    sampled = source.index("state.nid_to_fitins = {")
    assert source.index("configure_fit(") < sampled < source.index("self.quantization_range")
    assert "Key.TARGET_RANGE: state.quantization_range" in source  # what the sites quantise to
    workflow = secure_rounds._fit_workflow(SecureAggregationConfig(modulus_bits=24), [(2,)])
    assert workflow is not None and workflow.modulus_range == 2**24
    workflow._round = secure_rounds.WorkflowState(nid_to_fitins=dict.fromkeys(range(10)))  # type: ignore[attr-defined]
    assert workflow.quantization_range == (2**24 - 1) // 10


def test_a_round_of_many_sites_at_24_bits_logs_its_few_levels_once(caplog) -> None:
    workflow = secure_rounds._fit_workflow(SecureAggregationConfig(modulus_bits=24), [(2,)])
    assert workflow is not None
    for sites in (15, 16, 40):
        workflow._round = secure_rounds.WorkflowState(nid_to_fitins=dict.fromkeys(range(sites)))  # type: ignore[attr-defined]
        workflow.quantization_range  # noqa: B018 (read as Flower's setup stage reads it)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [  # 15 sites still get 2**20 levels; 16 do not, and it is said once
        "SecAgg+ quantises to 1048575 levels for 16 sites at modulus 2**24 (2**22 up to 3 "
        "sites): set secure_aggregation.modulus_bits = 32 for finer updates"
    ]


@pytest.mark.parametrize(("sites", "bits"), [(3, 24), (10, 24), (100, 24), (10, 32)])
def test_masked_sums_of_packed_entries_unmask_to_the_weighted_mean(sites: int, bits: int) -> None:
    """Flower's client quantisation and server dequantisation at medfed's modulus and levels.

    Each site weighs its delta by examples / max_weight, quantises it (stochastic rounding)
    and masks it; the masks cancel in the sum. Packed into bits / 8 bytes an entry and summed
    modulo 2**bits, the sum must not wrap, and the unmasked mean is within the quantisation
    error: per entry at most sites x one level (2 x clipping_range / levels) over the summed
    weights.
    """
    mod, clip, max_weight = 2**bits, 2.0, 10_000.0
    levels = quantization_levels(mod, sites)
    rng = np.random.default_rng(sites)
    examples = rng.integers(50, 500, size=sites)
    deltas = [rng.normal(0, 0.01, size=(40, 30)).clip(-clip, clip) for _ in range(sites)]
    masks = [rng.integers(0, mod, size=(1 + 1200,)) for _ in range(sites - 1)]
    masks.append((-np.sum(masks, axis=0)) % mod)  # pairwise masks cancel in the sum
    total = np.zeros(1 + 1200, dtype=np.uint32)
    for delta, count, mask in zip(deltas, examples, masks, strict=True):  # as secaggplus_mod
        q_ratio = round(count / max_weight * levels)
        weighted = parameters_multiply([delta], q_ratio / levels)
        quantised = factor_combine(q_ratio, quantize(weighted, clip, levels))
        masked = (np.concatenate([quantised[0].ravel(), quantised[1].ravel()]) + mask) % mod
        total += unpack_masked(pack_masked(masked, mod), masked.shape, mod)  # wraps mod 2**32
    summed = parameters_mod([total.astype(np.int64)], mod)[0]  # as the server's workflow
    q_total, (recon,) = factor_extract([summed[:1], summed[1:]])
    assert int(q_total) == sum(round(c / max_weight * levels) for c in examples)  # no wrap
    (mean,) = dequantize([recon], clip, levels)
    mean = (mean - (sites - 1) * clip) * (levels / q_total)
    exact = np.average(np.stack([d.ravel() for d in deltas]), axis=0, weights=examples)
    bound = sites * (2 * clip / levels) / (examples.sum() / max_weight)
    assert np.abs(mean - exact).max() < bound


def test_the_superexec_reads_the_launch_poll_interval_a_site_node_sets(monkeypatch) -> None:
    """client/site_node.py sets FLWR_SUPEREXEC_TASK_POLL_INTERVAL; flwr 1.41's default is 1 s."""
    from flwr.supercore.superexec import run_superexec

    from client.site_node import PROMPT_LAUNCH_ENV

    ((name, value),) = PROMPT_LAUNCH_ENV.items()
    monkeypatch.delenv(name, raising=False)
    assert run_superexec._get_task_poll_interval() == 1.0  # unset
    monkeypatch.setenv(name, value)
    assert run_superexec._get_task_poll_interval() == float(value)


def test_the_supernode_waits_the_site_shortens_are_flowers_fixed_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = flower_internals.supernode_loop()
    source = inspect.getsource(loop)
    # The loop sleeps through its module's `time`: 3 s after an empty pull, 0.5 s per reply check.
    assert source.count(f"time.sleep({flower_internals.FLOWER_IDLE_PULL_S})") == 1
    assert source.count(f"time.sleep({flower_internals.FLOWER_REPLY_CHECK_S})") == 2
    slept: list[float] = []
    now = [100.0]
    monkeypatch.setattr(loop, "time", time)  # restored after the test
    monkeypatch.setattr(time, "sleep", slept.append)
    flower_internals.shorten_supernode_waits(site_supernode.WAITS, clock=lambda: now[0])
    waits = site_supernode.WAITS
    loop.time.sleep(3)  # idle: nothing handled yet
    loop.time.sleep(0.5)  # a message's reply awaited at t = 100
    now[0] += waits.follow_up_window_s - 1
    loop.time.sleep(3)  # the round's next message is due
    now[0] += 2
    loop.time.sleep(3)  # idle again
    loop.time.sleep(0.2)
    assert slept == [
        waits.idle_pull_s,
        waits.reply_check_s,
        waits.follow_up_pull_s,
        waits.idle_pull_s,
        0.2,
    ]
    assert loop.time.monotonic is time.monotonic  # everything else is the real module
    with pytest.raises(ValueError, match="not longer than Flower's waits"):
        flower_internals.SupernodeWaits(5.0, 0.1, 0.25, 10.0)


def test_the_supernode_starts_its_superexec_by_popen_of_flowers_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """client/site_supernode.py swaps the SuperExec the SuperNode starts for the site's own."""
    loop = flower_internals.supernode_loop()
    source = inspect.getsource(loop)
    assert f'command = ["{flower_internals.FLOWER_SUPEREXEC_COMMAND}"]' in source
    assert source.count("subprocess.Popen(command)") == 1
    started: list[list[str]] = []
    monkeypatch.setattr(loop, "subprocess", loop.subprocess)  # restored after the test
    monkeypatch.setattr(subprocess, "Popen", lambda args, **_: started.append(args))
    flower_internals.redirect_superexec_launch(site_supernode.SUPEREXEC_LAUNCH)
    loop.subprocess.Popen(["flower-superexec", "--insecure", "--parent-pid", "7"])
    loop.subprocess.Popen(["something-else"])
    assert started == [
        [*site_supernode.SUPEREXEC_LAUNCH, "--insecure", "--parent-pid", "7"],
        ["something-else"],
    ]


def test_the_superexec_starts_each_clientapp_by_popen_with_its_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """client/site_superexec.py receives, through Flower's own executor, the launch it forks."""
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor.types import ExecutionSpec

    executor = flower_internals.superexec_executor()
    assert executor.TASK_TYPE_TO_COMMAND[TaskType.CLIENT_APP] == "flwr-clientapp"
    launched: list[tuple[list[str], bool]] = []
    monkeypatch.setattr(executor, "subprocess", executor.subprocess)  # restored after the test
    flower_internals.redirect_clientapp_launches(lambda args, quiet: launched.append((args, quiet)))
    for quiet in (False, True):
        spec = ExecutionSpec(
            task_type=TaskType.CLIENT_APP,
            runtime_api_address="127.0.0.1:9094",
            token="t0k3n",
            insecure=True,
            root_certificates_path=None,
            runtime_dependency_install=False,
            parent_pid=42,
            suppress_output=quiet,
            task_id=1,
        )
        assert executor.SubprocessExecutor().launch(spec).status == "accepted"
    args = ["flwr-clientapp", "--runtime-api-address", "127.0.0.1:9094", "--token", "t0k3n"]
    args += ["--insecure", "--parent-pid", "42"]
    assert launched == [(args, False), (args, True)]


def _pulls_with_flowers_backoff(pulls: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each of ``pulls`` has flwr 1.41's backoff defaults (restored after the test)."""
    for pull in pulls:
        defaults = pull.__kwdefaults__
        assert defaults["initial_backoff"] == flower_internals.FLOWER_PULL_BACKOFF_S
        assert defaults["backoff_cap"] == flower_internals.FLOWER_PULL_BACKOFF_CAP_S
        monkeypatch.setattr(pull, "__kwdefaults__", dict(defaults))


def test_message_parts_are_pulled_with_flowers_backoff_which_the_site_shortens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """client/site_supernode.py shortens the retries of the SuperNode's and the ClientApp's pulls
    of a message's parts: their callers leave Flower's defaults in place."""
    from flwr.supernode import start_client_internal
    from flwr.supernode.runtime import run_clientapp

    pull_objects, pull_and_inflate = flower_internals.message_pulls()
    assert start_client_internal.pull_objects is pull_objects
    assert "pull_and_inflate_object_from_tree(" in inspect.getsource(run_clientapp.pull_task_input)
    for caller in (start_client_internal._pull_and_store_message, run_clientapp.pull_task_input):
        assert "backoff" not in inspect.getsource(caller)
    _pulls_with_flowers_backoff((pull_objects, pull_and_inflate), monkeypatch)
    flower_internals.shorten_message_pull_backoff(
        site_supernode.PULL_BACKOFF_S, site_supernode.PULL_BACKOFF_CAP_S
    )
    for pull in (pull_objects, pull_and_inflate):
        assert pull.__kwdefaults__["initial_backoff"] == site_supernode.PULL_BACKOFF_S
        assert pull.__kwdefaults__["backoff_cap"] == site_supernode.PULL_BACKOFF_CAP_S
    for initial_s, cap_s in ((2.0, 2.0), (0.1, 20.0), (0.5, 0.2), (0.0, 0.2)):
        with pytest.raises(ValueError, match="not longer than Flower's"):
            flower_internals.shorten_message_pull_backoff(initial_s, cap_s)


def test_the_coordinator_pulls_reply_parts_with_a_shortened_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """server/secure_rounds.py shortens the retries of the ServerApp's pulls of a reply's parts."""
    from flwr.supercore.inflatable.inflatable_utils import pull_objects
    from flwr.superlink.grid import http_grid

    assert http_grid.pull_objects is pull_objects
    assert "backoff" not in inspect.getsource(http_grid.HttpGrid.pull_messages)
    _pulls_with_flowers_backoff((pull_objects,), monkeypatch)
    secure_rounds.shorten_reply_part_pulls()
    assert pull_objects.__kwdefaults__["initial_backoff"] == secure_rounds.REPLY_PART_BACKOFF_S[0]
    assert pull_objects.__kwdefaults__["backoff_cap"] == secure_rounds.REPLY_PART_BACKOFF_S[1]
