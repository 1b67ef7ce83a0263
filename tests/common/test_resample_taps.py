import numpy as np
import pytest

from common.data.resample_taps import plan_resampling
from common.data.resampling import resample_images


@pytest.mark.parametrize(
    ("shape", "spacing", "target", "size"),
    [
        ((256, 256), None, None, 64),  # plain resize (the default)
        ((20, 30), None, None, 64),  # upsampling
        ((40, 40), (0.5, 0.5), 1.0, 32),  # zoom out, then zero pad
        ((37, 53), (0.7, 0.9), 0.5, 64),  # zoom in, then centre crop; odd sizes
        ((256, 200), (0.7, 0.7), 3.0, 64),
        ((65, 64), (1.0, 1.0), 1.0, 64),  # crop one row only
    ],
)
def test_taps_resample_as_monai_does(shape, spacing, target, size) -> None:
    images = np.random.default_rng(0).normal(0, 1, (3, *shape)).astype(np.float32)
    plan = plan_resampling(shape, spacing, target, size)
    taps = plan.gather(images)
    assert taps.shape == (3, 4, *plan.flat.shape[1:])
    expected = resample_images(images, spacing, target, size)
    assert np.allclose(plan.combine(taps), expected, atol=1e-4)
    assert resample_images(images, spacing, target, size).shape == (3, size, size)


def test_windowing_the_taps_equals_windowing_before_resampling() -> None:
    images = np.random.default_rng(1).normal(40, 300, (2, 96, 80)).astype(np.float32)
    plan = plan_resampling((96, 80), None, None, 32)
    windowed = np.clip((images + 160) / 400, 0, 1)
    taps = np.clip((plan.gather(images) + 160) / 400, 0, 1)
    assert np.allclose(plan.combine(taps), resample_images(windowed, None, None, 32), atol=1e-5)
