"""What the coordinator refuses of a SecAgg+ reply before Flower's workflow reads it.

Replies are built as Flower's secaggplus_mod builds them (a FitRes record plus the masked
vectors as serialised integer arrays, the site's weight first); the end-to-end cases (a wrong
shape, an inflated count, the round finishing without them) run in
tests/simulations/test_hostile_sites.py and tests/deployment/test_hostile_hospitals.py.
"""

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from flwr.common import Code, FitRes, Status, ndarray_to_bytes, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common.recorddict_compat import fitres_to_recorddict

from server.secure_rounds import masked_reply_problem, shares_reply_problem

SHAPES = [(3, 2), (2,)]
MOD = 2**32


def _reply(vectors: list, num_examples: int = 10) -> RecordDict:
    fit = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([]), num_examples, {"site": "s"})
    content = fitres_to_recorddict(fit, keep_input=True)
    content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord({Key.MASKED_PARAMETERS: vectors})
    return content


def _masked(shapes: list[tuple[int, ...]], dtype: type = np.int64) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [ndarray_to_bytes(rng.integers(0, MOD, size=s).astype(dtype)) for s in shapes]


def test_a_well_formed_masked_reply_passes() -> None:
    assert masked_reply_problem(_reply(_masked([(1,), *SHAPES])), SHAPES, MOD, 100) is None
    narrowed = _masked([(1,), *SHAPES], np.uint32)  # the sites' narrowed upload
    assert masked_reply_problem(_reply(narrowed), SHAPES, MOD, 100) is None


@pytest.mark.parametrize(
    ("vectors", "count", "expected"),
    [
        (_masked([(1,), (3, 1), (2,)]), 10, "masked array 0 has shape (3, 1)"),
        (_masked([(1,), (3, 2)]), 10, "2 masked vectors where the model needs 3"),
        (_masked([(1,), *SHAPES, (1,)]), 10, "4 masked vectors where the model needs 3"),
        ([ndarray_to_bytes(np.full(1, 0.5)), *_masked(SHAPES)], 10, "holds float64"),
        ([ndarray_to_bytes(np.array([MOD])), *_masked(SHAPES)], 10, "outside [0, 4294967296)"),
        ([b"\x93NUMPY garbage", *_masked(SHAPES)], 10, "not a serialised array"),
        ([ndarray_to_bytes(np.zeros(1, np.int64))[:-4], *_masked(SHAPES)], 10, "decode"),
        ("not a list", 10, "no masked vectors"),
        (_masked([(1,), *SHAPES]), 10**9, "declares 1000000000 training images"),
    ],
)
def test_a_malformed_masked_reply_is_named(vectors: object, count: int, expected: str) -> None:
    problem = masked_reply_problem(_reply(vectors, count), SHAPES, MOD, 100)  # type: ignore[arg-type]
    assert problem is not None and expected in problem, problem


def test_an_unmask_reply_must_pair_known_nodes_with_byte_shares() -> None:
    def reply(nodes: object, shares: object) -> RecordDict:
        record = ConfigRecord({Key.NODE_ID_LIST: nodes, Key.SHARE_LIST: shares})  # type: ignore[dict-item]
        return RecordDict({RECORD_KEY_CONFIGS: record})

    assert shares_reply_problem(reply([1, 2], [b"a", b"b"]), {1, 2, 3}) is None
    assert "does not pair" in str(shares_reply_problem(reply([1, 2], [b"a"]), {1, 2}))
    assert "outside the round" in str(shares_reply_problem(reply([1, 9], [b"a", b"b"]), {1, 2}))
    assert "does not pair" in str(shares_reply_problem(RecordDict(), {1}))
