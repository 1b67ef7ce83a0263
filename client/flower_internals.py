"""The site's only door into Flower internals: SecAgg+'s record keys, its mod, message serde.

flwr 1.41 exposes SecAgg+ only on its legacy path; its record keys and stage names live in
``flwr.common.secure_aggregation`` and messages are serialised by ``flwr.common.serde``. Every
use is re-exported from here, and tests/client/test_flower_contract.py fails loudly when a
Flower upgrade moves or changes them.
"""

from flwr.client.mod import secaggplus_mod
from flwr.common import bytes_to_ndarray, ndarray_to_bytes
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
)
from flwr.common.serde import recorddict_to_proto

__all__ = [
    "RECORD_KEY_CONFIGS",
    "RECORD_KEY_STATE",
    "Key",
    "bytes_to_ndarray",
    "ndarray_to_bytes",
    "recorddict_to_proto",
    "secaggplus_mod",
]
