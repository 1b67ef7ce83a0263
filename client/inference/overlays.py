"""PNG overlays a clinician can look at: saliency heat maps and predicted masks on the image."""

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["heat_colors", "heat_overlay", "mask_overlay", "write_png"]

#: Heat map colour stops (value, RGB): dark blue, cyan, yellow, red (a jet-like scale).
_HEAT_STOPS = np.array([0.0, 0.35, 0.65, 1.0])
_HEAT_RGB = np.array([[0, 0, 160], [0, 220, 255], [255, 230, 0], [220, 0, 0]], dtype=np.float32)

#: Mask classes 1, 2, ... are tinted in these colours (cycled); 0 (background) is not tinted.
_SEGMENT_RGB = np.array(
    [[255, 64, 64], [64, 200, 64], [64, 128, 255], [255, 200, 0], [200, 64, 255]],
    dtype=np.float32,
)


def _gray_rgb(image: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> float RGB [H, W, 3] in 0..255."""
    gray = np.clip(image, 0.0, 1.0) * 255.0
    return np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)


def heat_colors(heat: np.ndarray) -> np.ndarray:
    """Colour of each value of ``heat`` [H, W] in [0, 1]: float RGB [H, W, 3]."""
    values = np.clip(heat, 0.0, 1.0)
    return np.stack(
        [np.interp(values, _HEAT_STOPS, _HEAT_RGB[:, c]) for c in range(3)], axis=-1
    ).astype(np.float32)


def heat_overlay(image: np.ndarray, heat: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """The image in gray with the heat map blended in where it is high: uint8 RGB [H, W, 3].

    Each pixel's colour weight is ``opacity * heat``, so regions that did not drive the
    prediction stay plain gray.
    """
    weight = (opacity * np.clip(heat, 0.0, 1.0))[..., None]
    blended = _gray_rgb(image) * (1.0 - weight) + heat_colors(heat) * weight
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _boundary(region: np.ndarray) -> np.ndarray:
    """Pixels of ``region`` with a 4-neighbour outside it (its contour)."""
    padded = np.pad(region, 1, mode="constant", constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return region & ~inner


def mask_overlay(image: np.ndarray, mask: np.ndarray, tint: float = 0.3) -> np.ndarray:
    """The image in gray, each predicted class tinted and outlined: uint8 RGB [H, W, 3]."""
    rgb = _gray_rgb(image)
    for label in (int(v) for v in np.unique(mask) if v > 0):
        colour = _SEGMENT_RGB[(label - 1) % len(_SEGMENT_RGB)]
        region = mask == label
        rgb[region] = rgb[region] * (1.0 - tint) + colour * tint
        rgb[_boundary(region)] = colour
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def write_png(rgb: np.ndarray, path: Path) -> Path:
    """Write uint8 RGB [H, W, 3] as a PNG (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path
