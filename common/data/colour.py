"""One colour rule for every image format: which channels of a picture or volume the model sees."""

from typing import Literal, get_args

import numpy as np

__all__ = ["CHANNEL_RULES", "ChannelRule", "apply_channel_rule", "channel_count"]

ChannelRule = Literal["grey", "rgb", "r", "g", "b"]
#: Every value ``--channels`` takes: grey is the mean of R, G and B; rgb keeps the three
#: channels; r, g, b keep one of them (e.g. ``g`` for retinal vessels).
CHANNEL_RULES: tuple[str, ...] = get_args(ChannelRule)
_ONE_CHANNEL = {"r": 0, "g": 1, "b": 2}


def channel_count(rule: str) -> int:
    """Channels the model sees under ``rule``: 3 for rgb, else 1."""
    return 3 if rule == "rgb" else 1


def apply_channel_rule(pixels: np.ndarray, rule: str) -> np.ndarray:
    """``pixels`` [H, W] (grey) or [H, W, C] (C = 1, 2, 3 or 4) as [channels, H, W] float32.

    Grey with alpha (C = 2) and RGBA (C = 4) drop the alpha channel. A grey image is the same
    under every rule (repeated three times for rgb), so grey and colour sites can join one
    federation; a colour image is averaged for grey.

    Raises:
        ValueError: ``rule`` is not one of CHANNEL_RULES, or the array is not an image.
    """
    if rule not in CHANNEL_RULES:
        raise ValueError(f"channels {rule!r} is not one of {list(CHANNEL_RULES)}")
    values = np.asarray(pixels, dtype=np.float32)
    if values.ndim == 3 and values.shape[2] in (1, 2):  # grey, grey + alpha
        values = values[..., 0]
    if values.ndim == 2:
        return np.repeat(values[None], channel_count(rule), axis=0)
    if values.ndim != 3 or values.shape[2] not in (3, 4):
        raise ValueError(f"expected [H, W] or [H, W, 1-4] pixels, got shape {values.shape}")
    rgb = values[..., :3].transpose(2, 0, 1)
    if rule == "grey":
        return rgb.mean(axis=0, keepdims=True)
    if rule == "rgb":
        return np.ascontiguousarray(rgb)
    return rgb[_ONE_CHANNEL[rule]][None].copy()
