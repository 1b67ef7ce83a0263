"""Intensity normalisation to [0, 1]: CT windowing presets or percentile scaling."""

import numpy as np

__all__ = [
    "PERCENTILES",
    "WINDOW_CHOICES",
    "WINDOW_PRESETS",
    "normalise_intensity",
    "scale_to_unit",
    "window_range",
]

#: (level, width) in Hounsfield units, the usual radiology presets.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft-tissue": (40.0, 400.0),
    "brain": (40.0, 80.0),
    "bone": (400.0, 1800.0),
}

#: Every value a ``--window`` option takes ('auto' picks one per modality).
WINDOW_CHOICES = ["auto", "percentile", *WINDOW_PRESETS]

#: Percentiles mapped to 0 and 1 by ``percentile`` scaling.
PERCENTILES = (0.5, 99.5)


def window_range(window: str, values: np.ndarray | None = None) -> tuple[float, float]:
    """The intensities mapped to 0 and 1: a preset's bounds, or percentiles of ``values``.

    Args:
        window: ``percentile`` or a name of :data:`WINDOW_PRESETS`.
        values: the intensities the percentiles are taken over (needed for ``percentile``).

    Raises:
        ValueError: for an unknown window, or ``percentile`` without values.
    """
    if window == "percentile":
        if values is None or values.size == 0:
            raise ValueError("percentile scaling needs the images' values")
        low, high = np.percentile(values, PERCENTILES)
        return float(low), float(high)
    if window in WINDOW_PRESETS:
        level, width = WINDOW_PRESETS[window]
        return level - width / 2, level + width / 2
    choices = ["percentile", *WINDOW_PRESETS]
    raise ValueError(f"unknown window {window!r}; choose from {choices}")


def scale_to_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``(values - low) / (high - low)`` clipped to [0, 1], in place on a float32 array.

    As MONAI's ``ScaleIntensityRange`` (clip=True) without its tensor round trip; like it,
    ``low == high`` only subtracts ``low`` before clipping.
    """
    values -= np.float32(low)
    if high != low:
        values *= np.float32(1.0 / (high - low))
    return np.clip(values, 0.0, 1.0, out=values)


def normalise_intensity(images: np.ndarray, window: str) -> np.ndarray:
    """Scale [N, H, W] (or [H, W]) to [0, 1] with a preset window or ``percentile`` scaling.

    Windows suit CT in Hounsfield units; percentile scaling (0.5th-99.5th, over all the images
    given at once, e.g. a whole series) suits MR, X-ray and anything without absolute units.
    """
    scaled = np.array(images, dtype=np.float32)  # a copy: the caller's array is left as is
    return scale_to_unit(scaled, *window_range(window, scaled))
