"""Align the series of one study (one per sequence) on one output grid.

The first series is registered to the reference (the atlas or a site's volume) when there is
one; every other series is registered rigidly to the first (the same head in one session) and
that transform composed with the first's, so each series maps straight from the output grid.
Without a reference the output grid is the first series' own, centred, at the wanted spacing.
"""

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from common.data.registration import Limits, Registration, TransformKind, register, resample

__all__ = ["Alignment", "StudyNotAligned", "align_study", "output_grid", "on_grid"]


class StudyNotAligned(Exception):
    """One series of the study could not be aligned: ``index`` names it, the message says why."""

    def __init__(self, index: int, reason: str, done: list["Alignment"]) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason
        self.done = done


@dataclass(frozen=True)
class Alignment:
    """Output grid points -> one series' points, and the registration behind it (None: none)."""

    transform: sitk.Transform
    registration: Registration | None
    #: What the series was registered to: "reference", "first sequence" or "" (not registered).
    target: str


def output_grid(reference: sitk.Image, spacing: float | None, size: int) -> sitk.Image:
    """An empty grid centred on ``reference``, ``size`` x ``size`` pixels in-plane.

    In-plane spacing ``spacing`` mm (default the reference's); slices at the reference's slice
    spacing over its extent, along its axes.
    """
    ref_spacing = np.asarray(reference.GetSpacing(), dtype=float)
    ref_size = np.asarray(reference.GetSize(), dtype=float)
    step = spacing or float(ref_spacing[:2].mean())
    out_spacing = np.array([step, step, ref_spacing[2]])
    out_size = np.array([size, size, int(ref_size[2])])
    direction = np.asarray(reference.GetDirection(), dtype=float).reshape(3, 3)
    centre = np.asarray(
        reference.TransformContinuousIndexToPhysicalPoint(((ref_size - 1) / 2).tolist())
    )
    origin = centre - direction @ (out_spacing * (out_size - 1) / 2)
    grid = sitk.Image([int(n) for n in out_size], sitk.sitkFloat32)
    grid.SetSpacing(out_spacing.tolist())
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin(origin.tolist())
    return grid


def align_study(
    images: list[sitk.Image],
    reference: sitk.Image | None,
    kind: TransformKind = "affine",
    limits: Limits | None = None,
) -> list[Alignment]:
    """One alignment per image (first to ``reference``, the others rigidly to the first).

    Raises:
        StudyNotAligned: a registration failed or moved implausibly (see registration.register).
    """
    done: list[Alignment] = []
    first: sitk.Transform = sitk.Euler3DTransform()
    for index, image in enumerate(images):
        try:
            if index == 0 and reference is not None:
                found = register(image, reference, kind, limits)
                first = found.transform
                done.append(Alignment(first, found, "reference"))
            elif index == 0:
                done.append(Alignment(first, None, ""))
            else:  # rigid to the first series, then composed: grid -> first -> this one
                found = register(image, images[0], "rigid", limits)
                chained = sitk.CompositeTransform([found.transform, first])
                done.append(Alignment(chained, found, "first sequence"))
        except Exception as exc:  # RegistrationFailed; anything else is a failure too
            reason = str(exc) if str(exc) else type(exc).__name__
            raise StudyNotAligned(index, reason, done) from exc
    return done


def on_grid(
    images: list[sitk.Image],
    alignments: list[Alignment],
    grid: sitk.Image,
    mask: sitk.Image | None = None,
    mask_of: int = 0,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Channels [C, Z, Y, X] on ``grid``, the mask [Z, Y, X], and the slices' coverage [Z].

    The mask moves with series ``mask_of`` (nearest neighbour); coverage is the share of each
    grid slice that every series covers.
    """
    channels = np.stack(
        [resample(i, a.transform, grid) for i, a in zip(images, alignments, strict=True)]
    )
    covered = np.ones(channels.shape[1:], dtype=bool)
    for image, alignment in zip(images, alignments, strict=True):
        ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
        ones.CopyInformation(image)
        covered &= resample(ones, alignment.transform, grid, nearest=True) > 0
    moved = None
    if mask is not None:
        moved = resample(mask, alignments[mask_of].transform, grid, nearest=True).astype(np.uint8)
    return channels.astype(np.float32), moved, covered.mean(axis=(1, 2))
