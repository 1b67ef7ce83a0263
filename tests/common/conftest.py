import numpy as np
import pytest

from common.data.arrays import ImageArrays


@pytest.fixture
def small_images() -> ImageArrays:
    """200 learnable 16x16 images: class 1 has a bright square, class 0 does not."""
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 2
    images = rng.normal(0.3, 0.05, size=(200, 1, 16, 16)).astype(np.float32)
    images[labels == 1, :, 4:9, 4:9] += 0.5
    return ImageArrays(images=images.clip(0, 1), labels=labels.astype(np.int64))
