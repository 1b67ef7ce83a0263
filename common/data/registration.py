"""Rigid or affine registration of one 3D image to a reference (SimpleITK), and resampling.

A function of (image, reference) only: the 2D and 3D prepare paths both call :func:`register`
then :func:`resample` onto whatever output grid they build. The metric is Mattes mutual
information (Mattes et al., IEEE TMI 2003), which compares sequences of different contrast
(T2 or FLAIR to a T1 atlas); the optimiser runs over a 3-level pyramid (shrink 4, 2, 1 with
Gaussian smoothing 2, 1, 0 voxels) with regular-step gradient descent. A result is
checked for plausibility (rotation, shift of the reference's centre, scale) before it is used:
a registration that fails or moves implausibly is reported, never silently kept.
"""

import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import SimpleITK as sitk

__all__ = [
    "TRANSFORM_KINDS",
    "Limits",
    "Registration",
    "RegistrationFailed",
    "TransformKind",
    "register",
    "resample",
]

logger = logging.getLogger(__name__)

TransformKind = Literal["rigid", "affine"]
#: Every value a ``--transform`` option takes.
TRANSFORM_KINDS: tuple[TransformKind, ...] = ("rigid", "affine")

_SHRINK = (4, 2, 1)
_SIGMAS = (2.0, 1.0, 0.0)
_BINS = 32
_SAMPLING = 0.05
_ITERATIONS = 300
#: Fixed seed of the metric's random sampling: the same data registers the same way.
_SEED = 7


class RegistrationFailed(Exception):
    """Registration did not give a usable transform; the message is the QC reason."""


@dataclass(frozen=True)
class Limits:
    """What a plausible result may do to a head: beyond any of these it is refused."""

    max_rotation_deg: float = 30.0
    max_shift_mm: float = 40.0
    min_scale: float = 0.8
    max_scale: float = 1.25


@dataclass(frozen=True)
class Registration:
    """A transform from reference points to image points, with the metric before and after."""

    transform: sitk.Transform
    #: Mattes mutual information (negative: lower is better) with the identity and the result.
    metric_before: float
    metric_after: float
    seconds: float


def _method() -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(_SAMPLING, _SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-4,
        numberOfIterations=_ITERATIONS,
        relaxationFactor=0.8,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(_SHRINK))
    method.SetSmoothingSigmasPerLevel(list(_SIGMAS))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


def _centre(image: sitk.Image) -> tuple[float, ...]:
    size = np.asarray(image.GetSize(), dtype=float)
    return tuple(image.TransformContinuousIndexToPhysicalPoint(list((size - 1) / 2)))


def _metric(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float:
    method = _method()
    method.SetMetricSamplingStrategy(method.NONE)  # every voxel: before and after compare
    method.SetInitialTransform(transform, inPlace=False)
    return float(method.MetricEvaluate(fixed, moving))


def _plausibility_problem(transform: sitk.Transform, fixed: sitk.Image, limits: Limits) -> str:
    """Why the result moves a head implausibly, or "" when it does not."""
    matrix = np.array(transform.GetMatrix(), dtype=np.float64).reshape(3, 3)  # type: ignore[attr-defined]  # rigid and affine have one
    u, scales, vt = np.linalg.svd(matrix)
    rotation = u @ vt
    angle = math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0))))
    centre = np.asarray(_centre(fixed))
    shift = float(np.linalg.norm(np.asarray(transform.TransformPoint(tuple(centre))) - centre))
    if np.linalg.det(matrix) <= 0:
        return "registration moved implausibly (a mirror image)"
    if angle > limits.max_rotation_deg:
        return (
            f"registration moved implausibly (rotation {angle:.0f} deg > "
            f"{limits.max_rotation_deg:g})"
        )
    if shift > limits.max_shift_mm:
        return f"registration moved implausibly (shift {shift:.0f} mm > {limits.max_shift_mm:g})"
    if scales.min() < limits.min_scale or scales.max() > limits.max_scale:
        return (
            f"registration moved implausibly (scale {scales.min():.2f}-{scales.max():.2f} "
            f"outside {limits.min_scale:g}-{limits.max_scale:g})"
        )
    return ""


def _run(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> None:
    """Optimise ``transform`` in place."""
    method = _method()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)


def register(
    image: sitk.Image,
    reference: sitk.Image,
    kind: TransformKind = "affine",
    limits: Limits | None = None,
) -> Registration:
    """Register ``image`` to ``reference``; the transform maps reference points to image points.

    Both are float32 3D images with their physical geometry (origin, spacing, direction).

    Raises:
        RegistrationFailed: SimpleITK failed (e.g. no overlap between the images), the metric
            got worse, or the result moved implausibly (see :class:`Limits`); the message says
            which.
    """
    start = time.perf_counter()
    fixed = sitk.Cast(reference, sitk.sitkFloat32)
    moving = sitk.Cast(image, sitk.sitkFloat32)
    result: sitk.Transform = (
        sitk.AffineTransform(3) if kind == "affine" else sitk.Euler3DTransform()
    )
    result.SetCenter(_centre(fixed))  # type: ignore[attr-defined]  # both kinds have a centre
    try:
        before = _metric(fixed, moving, result)
        _run(fixed, moving, result)
        after = _metric(fixed, moving, result)
    except RuntimeError as exc:  # ITK's exceptions: too few samples in the overlap, ...
        logger.debug("registration failed", exc_info=True)
        text = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else "no message"
        raise RegistrationFailed(f"registration failed (SimpleITK: {text})") from None
    if not (math.isfinite(before) and math.isfinite(after)):
        raise RegistrationFailed("registration failed (metric not finite: no overlap)")
    if after > before + 1e-3:
        raise RegistrationFailed(
            f"registration failed (mutual information got worse: {before:.3f} -> {after:.3f})"
        )
    problem = _plausibility_problem(result, fixed, limits or Limits())
    if problem:
        raise RegistrationFailed(problem)
    return Registration(result, before, after, time.perf_counter() - start)


def resample(
    image: sitk.Image, transform: sitk.Transform, grid: sitk.Image, nearest: bool = False
) -> np.ndarray:
    """``image`` on ``grid`` through ``transform`` (grid -> image points); [z, y, x] float32.

    Linear interpolation, or nearest neighbour for masks and labels; zero outside the image.
    """
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = sitk.Resample(image, grid, transform, interpolator, 0.0, image.GetPixelID())
    return sitk.GetArrayFromImage(out)
