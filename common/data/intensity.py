"""Intensity normalisation to [0, 1]: CT windowing presets or percentile scaling (MONAI)."""

import numpy as np
from monai.transforms import ScaleIntensityRange, ScaleIntensityRangePercentiles

__all__ = ["WINDOW_PRESETS", "normalise_intensity"]

#: (level, width) in Hounsfield units, the usual radiology presets.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft-tissue": (40.0, 400.0),
    "brain": (40.0, 80.0),
    "bone": (400.0, 1800.0),
}


def normalise_intensity(images: np.ndarray, window: str) -> np.ndarray:
    """Scale [N, H, W] (or [H, W]) to [0, 1] with a preset window or ``percentile`` scaling.

    Windows suit CT in Hounsfield units; percentile scaling (0.5th-99.5th, over all the images
    given at once, e.g. a whole series) suits MR, X-ray and anything without absolute units.
    """
    if window == "percentile":
        scaler = ScaleIntensityRangePercentiles(
            lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True
        )
    elif window in WINDOW_PRESETS:
        level, width = WINDOW_PRESETS[window]
        scaler = ScaleIntensityRange(
            a_min=level - width / 2, a_max=level + width / 2, b_min=0.0, b_max=1.0, clip=True
        )
    else:
        choices = ["percentile", *WINDOW_PRESETS]
        raise ValueError(f"unknown window {window!r}; choose from {choices}")
    return np.asarray(scaler(images.astype(np.float32, copy=False)), dtype=np.float32)
