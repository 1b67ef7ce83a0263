"""A plain delta on the wire: lossless, smaller, a hostile blob refused in bounded memory."""

import tracemalloc
import zlib

import numpy as np
import pytest

from common.update_encoding import UpdateDecodingError, decode_update, encode_update

SHAPES = [(32, 1, 3, 3), (32,), (64, 32, 3, 3), (2, 64)]
VALUES = sum(int(np.prod(shape)) for shape in SHAPES)


def _delta(dtype: type, scale: float = 1e-3) -> list[np.ndarray]:
    """Gaussian noise, as a DP-SGD delta looks, with the usual few exact zeros."""
    rng = np.random.default_rng(0)
    delta = [(rng.standard_normal(shape) * scale).astype(dtype) for shape in SHAPES]
    delta[1][:4] = 0
    return delta


@pytest.mark.parametrize(("dtype", "largest_ratio"), [(np.float32, 0.88), (np.float16, 0.45)])
def test_a_delta_decodes_to_the_same_bits_in_fewer_bytes(dtype: type, largest_ratio: float) -> None:
    delta = _delta(dtype)
    delta[2][0, 0, 0, 0] = -0.0  # even the sign of a zero survives
    sent = encode_update(delta)
    assert sent.dtype == np.uint8 and sent.ndim == 1
    # over the float32 model: float32 ~0.85, float16 ~0.43
    assert sent.nbytes / (4 * VALUES) < largest_ratio, sent.nbytes / (4 * VALUES)
    decoded = decode_update([sent], SHAPES, np.dtype(dtype))
    for before, after in zip(delta, decoded, strict=True):
        assert after.dtype == before.dtype and after.shape == before.shape
        assert before.tobytes() == after.tobytes()


def _bomb(inflated_bytes: int) -> np.ndarray:
    """A valid zlib stream of ``inflated_bytes`` zeros, about a thousandth of that compressed."""
    deflater = zlib.compressobj(9)
    chunk = bytes(2**20)
    parts = [deflater.compress(chunk) for _ in range(inflated_bytes // len(chunk))]
    return np.frombuffer(b"".join([*parts, deflater.flush()]), dtype=np.uint8)


def test_a_decompression_bomb_is_refused_after_inflating_no_more_than_the_model() -> None:
    bomb = _bomb(512 * 2**20)  # 512 MiB of zeros in about 0.5 MB
    assert bomb.nbytes < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(UpdateDecodingError, match=f"inflates past the {4 * VALUES:,} bytes"):
            decode_update([bomb], SHAPES, np.dtype(np.float32))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak  # the model's 77 kB and the input copy, never the 512 MiB


def _blob(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (lambda good: [good[:-20]], "is cut short"),
        (lambda good: [_blob(zlib.compress(bytes(4 * VALUES - 4)))], "arrays of other shapes"),
        (lambda good: [_blob(zlib.compress(bytes(4 * VALUES + 4)))], "inflates past"),
        (lambda good: [np.concatenate([good, good[:3]])], "3 bytes after its end"),
        (lambda good: [_blob(b"not a zlib stream")], "does not inflate"),
        (lambda good: [good, good], "2 array(s)"),
        (lambda good: _delta(np.float32), "4 array(s) (float32[32, 1, 3, 3], "),
        (lambda good: [good.astype(np.int16)], "int16"),
    ],
    ids=["truncated", "short", "long", "trailing", "garbage", "two", "raw", "not-bytes"],
)
def test_a_malformed_blob_is_refused_with_the_reason(sent: object, expected: str) -> None:
    good = encode_update(_delta(np.float32))
    with pytest.raises(UpdateDecodingError) as refused:
        decode_update(sent(good), SHAPES, np.dtype(np.float32))  # type: ignore[operator]
    assert expected in str(refused.value), str(refused.value)


def test_a_float32_delta_does_not_pass_for_a_float16_one() -> None:
    with pytest.raises(UpdateDecodingError, match="inflates past"):
        decode_update([encode_update(_delta(np.float32))], SHAPES, np.dtype(np.float16))
