"""What the coordinator refuses of a SecAgg+ reply before Flower's workflow reads it.

Replies are built as the site's ClientApp sends them (a FitRes record plus the masked
vectors, each entry packed into the modulus' bytes, the site's weight first); the end-to-end
cases (a wrong shape, an inflated count, the round finishing without them) run in
tests/simulations/test_hostile_sites.py and tests/deployment/test_hostile_hospitals.py.
"""

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from flwr.common import (
    Code,
    FitRes,
    Status,
    bytes_to_ndarray,
    ndarray_to_bytes,
    ndarrays_to_parameters,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common.recorddict_compat import fitres_to_recorddict

from common.masked_packing import pack_masked
from server.secure_rounds import masked_reply_problem, shares_reply_problem, widen_masked_vectors

SHAPES = [(3, 2), (2,)]
MOD = 2**24  # the job's default modulus: 3 bytes an entry


def _reply(vectors: list, num_examples: int = 10) -> RecordDict:
    fit = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([]), num_examples, {"site": "s"})
    content = fitres_to_recorddict(fit, keep_input=True)
    content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord({Key.MASKED_PARAMETERS: vectors})
    return content


def _integers(shapes: list[tuple[int, ...]], mod: int = MOD) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, mod, size=s) for s in shapes]


def _masked(shapes: list[tuple[int, ...]], mod: int = MOD) -> list[bytes]:
    """Masked vectors as a site sends them: each entry in the modulus' bytes."""
    return [pack_masked(vector, mod) for vector in _integers(shapes, mod)]


@pytest.mark.parametrize("mod", [2**24, 2**32])
def test_a_well_formed_masked_reply_passes_and_widens_to_the_same_integers(mod: int) -> None:
    vectors = _masked([(1,), *SHAPES], mod)
    assert [len(v) for v in vectors] == [mod.bit_length() // 8 * n for n in (1, 6, 2)]
    reply = _reply(vectors)
    assert masked_reply_problem(reply, SHAPES, mod, 100) is None
    widen_masked_vectors(reply, SHAPES, mod)  # what Flower's workflow then reads and adds
    widened = [bytes_to_ndarray(b) for b in reply[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]]
    for sent, received in zip(_integers([(1,), *SHAPES], mod), widened, strict=True):
        assert received.dtype == np.uint32 and np.array_equal(sent, received)


@pytest.mark.parametrize(
    ("vectors", "count", "expected"),
    [
        (
            _masked([(1,), (3, 1), (2,)]),
            10,
            "masked array 0 has 9 bytes where shape (3, 2) needs 18",
        ),
        (_masked([(1,), (3, 2)]), 10, "2 masked vectors where the model needs 3"),
        (_masked([(1,), *SHAPES, (1,)]), 10, "4 masked vectors where the model needs 3"),
        ([ndarray_to_bytes(np.zeros(1, np.int64)), *_masked(SHAPES)], 10, "masked weight has"),
        ([7, 8, 9], 10, "masked weight is not bytes"),
        ("not a list", 10, "no masked vectors"),
        (_masked([(1,), *SHAPES]), 10**9, "declares 1000000000 training images"),
    ],
)
def test_a_malformed_masked_reply_is_named(vectors: object, count: int, expected: str) -> None:
    problem = masked_reply_problem(_reply(vectors, count), SHAPES, MOD, 100)  # type: ignore[arg-type]
    assert problem is not None and expected in problem, problem


def test_an_entry_beyond_a_modulus_below_its_bytes_is_named() -> None:
    beyond = (2**20).to_bytes(3, "little")  # 3 bytes an entry hold more than 2**20
    vectors = [beyond, *_masked(SHAPES, 2**20)]
    assert "outside [0, 1048576)" in str(masked_reply_problem(_reply(vectors), SHAPES, 2**20, 100))


def test_an_unmask_reply_must_pair_known_nodes_with_byte_shares() -> None:
    def reply(nodes: object, shares: object) -> RecordDict:
        record = ConfigRecord({Key.NODE_ID_LIST: nodes, Key.SHARE_LIST: shares})  # type: ignore[dict-item]
        return RecordDict({RECORD_KEY_CONFIGS: record})

    assert shares_reply_problem(reply([1, 2], [b"a", b"b"]), {1, 2, 3}) is None
    assert "does not pair" in str(shares_reply_problem(reply([1, 2], [b"a"]), {1, 2}))
    assert "outside the round" in str(shares_reply_problem(reply([1, 9], [b"a", b"b"]), {1, 2}))
    assert "does not pair" in str(shares_reply_problem(RecordDict(), {1}))
