"""`medfed-sim generate`: write the small generated dataset used by the default demo."""

from pathlib import Path
from typing import Annotated

import typer

from common.cli_support import configure_logging
from simulations.synthetic_lesions import write_synthetic_lesions

__all__ = ["generate"]


def generate(
    out: Annotated[Path, typer.Option(help="Where to write the .npz file.")] = Path(
        "data/synthetic-lesions.npz"
    ),
    seed: Annotated[int, typer.Option(help="Generator seed (same seed, same images).")] = 0,
    image_size: Annotated[int, typer.Option(help="Image side in pixels.")] = 32,
) -> None:
    """Generate synthetic 'lesion present' images in the MedMNIST .npz layout (no download)."""
    configure_logging(False)
    path = write_synthetic_lesions(out, seed=seed, image_size=image_size)
    typer.echo(f"wrote {path}")
