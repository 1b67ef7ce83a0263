"""`medfed-sim generate`: write a demo dataset (no download)."""

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from common.cli_support import configure_logging, user_errors
from common.cli_values import check_output_file, check_output_folder
from common.errors import ConfigError
from simulations.brain_lesions import SLICE_RANGE, write_brain_lesion_sites
from simulations.brain_sequences import SEQUENCES, TRUTH_FILE, write_sequence_sites
from simulations.synthetic_lesions import write_synthetic_lesions

__all__ = ["generate"]

DATASETS = ("brain-mri", "lesions-2d")


def generate(
    out: Annotated[
        Path, typer.Option(help="Output: a folder (brain-mri) or a .npz file (lesions-2d).")
    ],
    dataset: Annotated[
        str,
        typer.Option(
            help="brain-mri: multi-site DICOM on real MNI152 anatomy; lesions-2d: small 2D images."
        ),
    ] = "brain-mri",
    sites: Annotated[int, typer.Option(help="brain-mri: number of hospitals (1-4).")] = 3,
    subjects: Annotated[
        int, typer.Option(help="brain-mri: subjects (DICOM series) per hospital.")
    ] = 10,
    seed: Annotated[int, typer.Option(help="Generator seed (same seed, same data).")] = 0,
    sequences: Annotated[
        str | None,
        typer.Option(
            help="brain-mri: write one series per MR sequence per subject (e.g. T1,T2,FLAIR), "
            "each with its own known misalignment (true_transforms.json per site)."
        ),
    ] = None,
    slices: Annotated[
        int | None,
        typer.Option(
            help="brain-mri: contiguous axial slices kept per subject, at a random depth "
            f"[default: all {SLICE_RANGE[1] - SLICE_RANGE[0]}]."
        ),
    ] = None,
) -> None:
    """Generate simulated data (lesions and scanner differences simulated; no real patient)."""
    configure_logging(False)
    with user_errors():
        if dataset not in DATASETS:
            raise ConfigError("--dataset", f"{dataset!r} is not one of {list(DATASETS)}")
        if seed < 0:
            raise ConfigError("--seed", f"{seed} must be a whole number >= 0")
        if dataset == "lesions-2d":
            if out.is_dir() or out.suffix != ".npz":
                raise ConfigError("--out", f"{out}: lesions-2d writes one .npz file: name it")
            check_output_file("--out", out)
            path = write_synthetic_lesions(out, seed=seed)
            path = write_synthetic_lesions(out, seed=seed)
            typer.echo(f"wrote {path}")
            return
        if not 1 <= sites <= 4:
            raise ConfigError("--sites", f"{sites} is not in 1-4 (one simulated scanner each)")
        if subjects < 1:
            raise ConfigError("--subjects", f"{subjects} must be a whole number >= 1")
        if slices is not None and slices < 1:
            raise ConfigError("--slices", f"{slices} must be a whole number >= 1")
        if out.exists() and not out.is_dir():
            raise ConfigError("--out", f"{out} is a file: brain-mri writes a folder")
        check_output_folder("--out", out)
        names = tuple(n.strip() for n in sequences.split(",")) if sequences else ()
        unknown = [n for n in names if n not in SEQUENCES]
        if unknown or (sequences is not None and not names):
            raise ConfigError("--sequences", f"{unknown or sequences} not among {list(SEQUENCES)}")
        if names and slices is not None:
            raise ConfigError(
                "--slices", "keeps slices of single-series subjects: not with --sequences"
            )
        if names:
            with Progress() as progress:
                task = progress.add_task("subjects", total=sites * subjects)
                folders = write_sequence_sites(
                    out, names, sites, subjects, seed,
                    on_subject=lambda done, total: progress.update(task, completed=done),
                )  # fmt: skip
            for folder in folders:
                typer.echo(f"wrote {folder}: DICOM under dicom/ (one folder per sequence), "
                           f"{TRUTH_FILE}")  # fmt: skip
            return
        with Progress() as progress:
            task = progress.add_task("subjects", total=sites * subjects)
            folders = write_brain_lesion_sites(
                out, sites, subjects, seed,
                on_subject=lambda done, total: progress.update(task, completed=done),
                slices_per_subject=slices,
            )  # fmt: skip
    for folder in folders:
        typer.echo(f"wrote {folder}: DICOM under dicom/, labels.csv, masks/")
