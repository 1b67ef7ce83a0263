"""The global model as one packed vector: exact both ways, and refused when it does not fit."""

import numpy as np
import pytest

from common.federation_job import FederationJob
from common.model_packing import ModelPackingError, layout_of, pack_arrays, unpack_arrays
from common.models import build_model


def _arrays(norm: str) -> list[np.ndarray]:
    job = FederationJob.model_validate({"model": {"norm": norm}})
    model = build_model(job.model, 1, 2, (32, 32), dp_enabled=norm != "batch")
    return [tensor.numpy().copy() for tensor in model.state_dict().values()]


@pytest.mark.parametrize("norm", ["group", "batch"])  # float32 only; with int64 counters
def test_a_model_packs_into_one_byte_vector_and_back_exactly(norm: str) -> None:
    arrays = _arrays(norm)
    assert {a.dtype for a in arrays} == (
        {np.dtype(np.float32), np.dtype(np.int64)} if norm == "batch" else {np.dtype(np.float32)}
    )
    packed = pack_arrays(arrays)
    assert packed.dtype == np.uint8 and packed.ndim == 1
    assert packed.size == sum(array.nbytes for array in arrays)
    back = unpack_arrays(packed, layout_of(arrays))
    assert [(a.shape, a.dtype) for a in back] == [(a.shape, a.dtype) for a in arrays]
    assert all(np.array_equal(a, b) for a, b in zip(arrays, back, strict=True))
    assert all(a.flags.writeable and a.flags.aligned for a in back)  # torch takes them as they are


def test_a_packed_model_of_another_size_or_type_is_refused() -> None:
    arrays = _arrays("group")
    layout, packed = layout_of(arrays), pack_arrays(arrays)
    for wrong in (packed[:-1], np.concatenate([packed, packed[:4]])):
        with pytest.raises(ModelPackingError, match=f"{wrong.size} bytes, this model's layout"):
            unpack_arrays(wrong, layout)
    for wrong in (packed.view(np.float32), packed.reshape(2, -1)):
        with pytest.raises(ModelPackingError, match="one uint8 vector"):
            unpack_arrays(wrong, layout)


def test_the_wire_bytes_are_little_endian_whatever_the_sender_holds() -> None:
    arrays = _arrays("batch")
    swapped = [a.astype(a.dtype.newbyteorder(">")) for a in arrays]  # a big-endian coordinator
    assert np.array_equal(pack_arrays(swapped), pack_arrays(arrays))
    assert pack_arrays([np.array([1.0], np.float32)]).tobytes() == b"\x00\x00\x80\x3f"
