"""A small generated 'lesion present' dataset for the default demo (simulated; no download).

Every image is a smooth random background with an elliptical 'organ'; half of them also hold a
blurred bright disk (the 'lesion') of random size, position and contrast, some of them faint.
It stands in until a realistic bundled dataset exists; it says nothing about clinical accuracy.
"""

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["CLASS_NAMES", "generate_synthetic_lesions", "write_synthetic_lesions"]

CLASS_NAMES = ("no-lesion", "lesion")


def _images(count: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images [N, size, size] uint8 and their labels [N, 1], half of them lesions."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    labels = rng.permutation(np.arange(count) % 2)
    images = np.empty((count, size, size), dtype=np.uint8)
    for i in range(count):
        background = gaussian_filter(rng.normal(0.0, 1.0, (size, size)), sigma=size / 6)
        background = 0.25 + 0.08 * background / (np.abs(background).max() + 1e-6)
        cy, cx = rng.uniform(0.4, 0.6, 2) * size
        ry, rx = rng.uniform(0.25, 0.4, 2) * size
        organ = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        image = background + organ * rng.uniform(0.15, 0.3)
        if labels[i] == 1:
            radius = max(1.5, rng.uniform(2.5, 5.0) * size / 32)
            ly, lx = cy + rng.uniform(-0.6, 0.6) * ry, cx + rng.uniform(-0.6, 0.6) * rx
            disk = ((yy - ly) ** 2 + (xx - lx) ** 2 <= radius**2).astype(np.float32)
            image = image + gaussian_filter(disk, sigma=0.8) * rng.uniform(0.12, 0.4)
        image = image + rng.normal(0.0, 0.04, (size, size))
        images[i] = np.clip(image * 255, 0, 255).astype(np.uint8)
    return images, labels.reshape(-1, 1).astype(np.uint8)


def generate_synthetic_lesions(
    n_train: int = 3000, n_val: int = 300, n_test: int = 600, image_size: int = 32, seed: int = 0
) -> dict[str, np.ndarray]:
    """Generate the dataset in the MedMNIST .npz layout; the same seed gives the same images.

    Args:
        n_train: Number of training images.
        n_val: Number of validation images.
        n_test: Number of test images.
        image_size: Images are ``image_size`` x ``image_size`` pixels.
        seed: Seed of every random choice.

    Returns:
        ``{train,val,test}_images`` uint8 [N, H, W], ``{train,val,test}_labels`` uint8 [N, 1]
        (1 = lesion, half of each split), and ``class_names`` ("no-lesion", "lesion").
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _images(count, image_size, rng)
    arrays["class_names"] = np.array(CLASS_NAMES)
    return arrays


def write_synthetic_lesions(path: Path, **kwargs: int) -> Path:
    """Generate the dataset and write it, compressed, to ``path`` (parent folders are created).

    Args:
        path: The .npz file to write.
        **kwargs: Passed to :func:`generate_synthetic_lesions`.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **generate_synthetic_lesions(**kwargs))
    return path
