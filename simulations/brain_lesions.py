"""Realistic multi-site demo data: real brain anatomy, simulated tumours and scanners, as DICOM.

Anatomy: the MNI152 T1 template, its white-matter map and brain mask, shipped inside the
nilearn wheel (no download). Lesions and site differences are simulated, seeded (the same seed
writes the same files):
- each subject is the template under a small random affine (pose and head size), with 1-2
  ring-enhancing, tumour-like ellipsoids of radius 8-20 mm, centred in white matter and
  clipped to the brain: a 4 mm rim 1.3-1.6 times as bright as the white matter around a core
  50-75% darker than the tissue it replaces (the look of a tumour on contrast-enhanced T1);
- each site has its own scanner signature: bias field, contrast (gamma), noise level,
  in-plane resolution, and vendor tags.
Each subject is written as one DICOM MR series (one file per axial slice of 2 mm) under
``OUT/site-K/dicom/subject-J/``, with its lesion mask as a DICOM SEG object beside it
(``seg.dcm``, on the image grid, referencing every slice), ``OUT/site-K/labels.csv`` labelling
slices (by file path under ``dicom/``) and the mask also as NIfTI at the template's 2 mm grid
(``OUT/site-K/masks/subject-J.nii.gz``). The slice label rule (:func:`slice_label`): ``lesion``
when the slice holds at least :data:`MIN_LESION_VOXELS` lesion voxels (100 mm^2),
``no-lesion`` when it holds none; a slice that cuts only a sliver of a tumour (1 to
``MIN_LESION_VOXELS - 1`` voxels) is left out of ``labels.csv``, so ``medfed-site prepare``
counts it as unlabelled and does not cache it (its SEG mask still covers it).
Until 2026-11-29 the demo had 1-4 small white-matter lesions (radius 5-12 mm, 30-60% darker)
and called a slice ``lesion`` from 6 voxels: at 3 mm its network could not see them
(docs/results.md). The lesions and site shifts are simulated; the result says nothing about
clinical accuracy.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.uid import generate_uid
from scipy.ndimage import affine_transform, distance_transform_edt, gaussian_filter, zoom

from simulations.dicom_writer import SeriesIdentity, write_dicom_series
from simulations.seg_writer import write_simulated_lesion_seg

__all__ = [
    "DEMO_TUMOURS",
    "SITE_SCANNERS",
    "WHITE_MATTER_LESIONS",
    "LesionShape",
    "ScannerSignature",
    "slice_label",
    "subject_identity",
    "write_brain_lesion_sites",
]

logger = logging.getLogger(__name__)

#: Lesion voxels a slice needs to be labelled ``lesion`` (2 mm voxels: 100 mm^2 of lesion);
#: a slice with fewer but some is a sliver, left unlabelled.
MIN_LESION_VOXELS = 25
#: Axial slices kept (template z index range): from the cerebellum to the vertex.
SLICE_RANGE = (18, 78)


@dataclass(frozen=True)
class LesionShape:
    """A subject's simulated lesions: how many, how large, how dark, and where they may lie."""

    count: tuple[int, int]  # drawn from [low, high)
    radius_voxels: tuple[float, float]  # per axis, voxels of 2 mm
    darkening: tuple[float, float]  # fraction of the intensity removed inside the lesion
    within_brain: bool  # clipped to the brain mask (tumours) or to white matter
    #: Enhancing rim (tumours): its intensity as a multiple of the subject's white matter,
    #: drawn from this range; None: no rim.
    rim_enhancement: tuple[float, float] | None = None


#: The demo's tumour-like lesions (radius 8-20 mm), large enough to see at 3 mm.
DEMO_TUMOURS = LesionShape((1, 3), (4.0, 10.0), (0.5, 0.75), True, (1.3, 1.6))
#: Thickness of a tumour's enhancing rim, in 2 mm voxels from its edge (4 mm).
RIM_VOXELS = 2.0
_PAD = 4  # voxels around the lesions painted: past the edge smoothing's reach
#: Small white-matter lesions (radius 5-12 mm): the multi-sequence generator's.
WHITE_MATTER_LESIONS = LesionShape((1, 5), (2.5, 6.0), (0.3, 0.6), within_brain=False)


def slice_label(lesion_voxels: int) -> str | None:
    """A slice's label from its lesion voxel count: ``lesion``, ``no-lesion`` or None (a sliver)."""
    if lesion_voxels >= MIN_LESION_VOXELS:
        return "lesion"
    return "no-lesion" if lesion_voxels == 0 else None


@dataclass(frozen=True)
class ScannerSignature:
    """How one site's scanner differs: intensity response, noise, resolution, vendor."""

    manufacturer: str
    model_name: str
    gamma: float
    bias_strength: float
    noise: float
    pixel_spacing_mm: float


SITE_SCANNERS = (
    ScannerSignature("SIEMENS", "Prisma (simulated)", 1.0, 0.10, 0.02, 2.0),
    ScannerSignature("GE MEDICAL SYSTEMS", "Discovery MR750 (simulated)", 0.8, 0.25, 0.04, 2.5),
    ScannerSignature("Philips", "Ingenia (simulated)", 1.25, 0.18, 0.03, 1.6),
    ScannerSignature("Canon", "Vantage (simulated)", 0.9, 0.30, 0.05, 3.0),
)


def subject_identity(
    scanner: ScannerSignature, seed: int, site: int, subject: int, series: str = ""
) -> SeriesIdentity:
    """The simulated subject's patient, study and series identity on ``scanner``.

    UIDs are derived from the seed (the same seed writes the same files); ``series`` names one
    of the subject's several series (a sequence), "" its only one.
    """
    subject_text = f"{seed}-{site}-{subject}"
    series_text = f"{subject_text}-{series}-series" if series else f"{subject_text}-series"
    return SeriesIdentity(
        patient_name=f"Simulated^Subject{site}{subject:02d}",
        patient_id=f"SIM-{site}-{subject:03d}",
        institution=f"Simulated Hospital {site}",
        manufacturer=scanner.manufacturer,
        model_name=scanner.model_name,
        modality="MR",
        study_uid=generate_uid(entropy_srcs=[f"{subject_text}-study"]),
        series_uid=generate_uid(entropy_srcs=[series_text]),
        frame_of_reference_uid=generate_uid(entropy_srcs=[f"{subject_text}-for"]),
    )


def _templates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MNI152 T1 template, its white-matter probability map and brain mask, 2 mm."""
    from nilearn.datasets import (  # imported here: nilearn takes seconds to import
        load_mni152_brain_mask,
        load_mni152_template,
        load_mni152_wm_template,
    )

    return tuple(  # type: ignore[return-value]
        np.asarray(loader(resolution=2).get_fdata(), dtype=np.float32)
        for loader in (load_mni152_template, load_mni152_wm_template, load_mni152_brain_mask)
    )


def _random_affine(
    shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    angle = np.deg2rad(rng.uniform(-6, 6))
    scale = rng.uniform(0.93, 1.07)
    rotation = (
        np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        / scale
    )
    centre = np.asarray(shape) / 2
    offset = centre - rotation @ centre + rng.uniform(-3, 3, 3)
    return rotation, offset


def _lesions(
    wm: np.ndarray,
    rng: np.random.Generator,
    shape: LesionShape = WHITE_MATTER_LESIONS,
    brain: np.ndarray | None = None,
) -> np.ndarray:
    """Ellipsoid lesion mask centred in white matter (each drawn inside its bounding box).

    Clipped to white matter, or to ``brain`` (a mask) when ``shape.within_brain``.
    """
    mask = np.zeros(wm.shape, dtype=bool)
    candidates = np.argwhere(wm > 0.7)
    inside = (candidates[:, 2] > SLICE_RANGE[0] + 4) & (candidates[:, 2] < SLICE_RANGE[1] - 4)
    candidates = candidates[inside]
    for _ in range(rng.integers(*shape.count)):
        centre = candidates[rng.integers(len(candidates))]
        radii = rng.uniform(*shape.radius_voxels, 3)
        low = np.maximum(centre - np.ceil(radii).astype(int), 0)
        high = np.minimum(centre + np.ceil(radii).astype(int) + 1, wm.shape)
        box = np.indices(high - low).transpose(1, 2, 3, 0) + low
        mask[tuple(slice(a, b) for a, b in zip(low, high, strict=True))] |= (
            ((box - centre) / radii) ** 2
        ).sum(-1) <= 1.0
    if shape.within_brain:
        if brain is None:
            raise ValueError("lesions within the brain need the brain mask")
        return mask & (brain > 0.5)
    return mask & (wm > 0.2)


def _with_tumours(
    image: np.ndarray,
    lesion: np.ndarray,
    wm: np.ndarray,
    shape: LesionShape,
    rng: np.random.Generator,
) -> np.ndarray:
    """Paint ring-enhancing tumours: a dark (necrotic) core inside a bright rim, soft-edged.

    The look of a glioblastoma or metastasis on contrast-enhanced T1: the core darkened by
    ``shape.darkening``, the outer :data:`RIM_VOXELS` of the lesion set to ``rim_enhancement``
    times the subject's median white-matter intensity. (Plain T1-dark lesions on this anatomy
    look like ventricles; plain bright ones saturate with the white matter under percentile
    scaling.)
    """
    if shape.rim_enhancement is None:
        raise ValueError("tumours need a rim enhancement range")
    white = float(np.median(image[wm > 0.9]))
    darkening, enhancement = rng.uniform(*shape.darkening), rng.uniform(*shape.rim_enhancement)
    found = np.argwhere(lesion)
    if not len(found):
        return image
    # Only the lesions' bounding box, padded past the smoothing's reach (4 sigma of 0.7 voxel),
    # is painted: the same values as over the whole volume, at a fraction of the cost.
    low = np.maximum(found.min(0) - _PAD, 0)
    high = np.minimum(found.max(0) + _PAD + 1, lesion.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    depth = distance_transform_edt(lesion[box])  # voxels from the lesion's edge, 0 outside
    rim = gaussian_filter(((depth > 0) & (depth <= RIM_VOXELS)).astype(np.float32), 0.7)
    core = gaussian_filter((depth > RIM_VOXELS).astype(np.float32), 0.7)
    painted = image.copy()
    darkened = image[box] * (1.0 - darkening * core)
    painted[box] = darkened * (1.0 - rim) + white * enhancement * rim
    return painted


def _bias_field(shape: tuple[int, ...], strength: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field: a random cubic polynomial of the coordinates.

    As in TorchIO's RandomBiasField (after Sudre et al. 2017); evaluated separably.
    """
    powers = [np.linspace(-1, 1, n, dtype=np.float32)[None] ** np.arange(4)[:, None] for n in shape]
    degree = np.add.outer(np.add.outer(np.arange(4), np.arange(4)), np.arange(4))
    coefficients = np.where(degree <= 3, rng.uniform(-1, 1, (4, 4, 4)), 0.0).astype(np.float32)
    field = np.einsum("ijk,ia,jb,kc->abc", coefficients, *powers, optimize=True)
    field /= np.abs(field).max() + 1e-6
    return 1.0 + strength * field


def _subject(
    templates: tuple[np.ndarray, np.ndarray, np.ndarray],
    scanner: ScannerSignature,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One subject's image (stored values) and lesion mask, both [z, y, x]."""
    t1, wm, brain = templates
    rotation, offset = _random_affine(t1.shape, rng)
    image = affine_transform(t1, rotation, offset, order=1)
    wm_moved = affine_transform(wm, rotation, offset, order=1)
    brain_moved = affine_transform(brain, rotation, offset, order=1)
    lesion = _lesions(wm_moved, rng, DEMO_TUMOURS, brain_moved)
    image = _with_tumours(image, lesion, wm_moved, DEMO_TUMOURS, rng)
    image = image * _bias_field(image.shape, scanner.bias_strength, rng)
    image = np.clip(image, 0, None) ** scanner.gamma
    image = image + np.abs(rng.normal(0, scanner.noise, image.shape))  # Rician-like floor
    # axial slices [z, y, x], at the site's in-plane resolution
    volume = image.transpose(2, 1, 0)[SLICE_RANGE[0] : SLICE_RANGE[1]]
    mask = lesion.transpose(2, 1, 0)[SLICE_RANGE[0] : SLICE_RANGE[1]]
    factor = 2.0 / scanner.pixel_spacing_mm
    volume = zoom(volume, (1, factor, factor), order=1)
    return volume * 1000.0, mask


def _on_image_grid(mask: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """The 2 mm lesion mask resampled (nearest) onto the site's image grid."""
    factors = [out / size for out, size in zip(image_shape, mask.shape, strict=True)]
    grid = zoom(mask.astype(np.uint8), factors, order=0)
    if grid.shape != image_shape:  # zoom rounds sizes the same way for both; guard anyway
        raise ValueError(f"mask grid {grid.shape} differs from image {image_shape}")
    return grid


def _slab(
    volume: np.ndarray, mask: np.ndarray, slices: int | None, entropy: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``slices`` contiguous axial slices at a random depth (all of them for ``None``).

    The depth is drawn from its own generator (seeded by ``entropy``), so keeping every slice
    leaves the subjects exactly as they were.
    """
    if slices is None or slices >= len(volume):
        return volume, mask
    start = int(np.random.default_rng(entropy).integers(0, len(volume) - slices + 1))
    return volume[start : start + slices], mask[start : start + slices]


def write_brain_lesion_sites(
    out: Path,
    sites: int = 3,
    subjects_per_site: int = 10,
    seed: int = 0,
    on_subject: Callable[[int, int], None] | None = None,
    slices_per_subject: int | None = None,
) -> list[Path]:
    """Write ``sites`` site folders of DICOM series with labels; returns the site folders.

    ``slices_per_subject`` keeps that many contiguous axial slices of each subject (at a random
    depth) instead of all of them: many patients with few images each, as patient-level DP needs.
    """
    if not 1 <= sites <= len(SITE_SCANNERS):
        raise ValueError(f"sites must be 1-{len(SITE_SCANNERS)}, got {sites}")
    if slices_per_subject is not None and slices_per_subject < 1:
        raise ValueError(f"slices_per_subject must be >= 1, got {slices_per_subject}")
    templates = _templates()
    rng = np.random.default_rng(seed)
    folders = []
    total = sites * subjects_per_site
    for site in range(sites):
        scanner = SITE_SCANNERS[site]
        site_dir = out / f"site-{site}"
        rows = ["file,label"]
        for subject in range(subjects_per_site):
            volume, mask = _slab(
                *_subject(templates, scanner, rng), slices_per_subject, [seed, site, subject]
            )
            identity = subject_identity(scanner, seed, site, subject)
            spacing = (2.0, scanner.pixel_spacing_mm, scanner.pixel_spacing_mm)
            folder = site_dir / "dicom" / f"subject-{subject:02d}"
            paths = write_dicom_series(
                volume, spacing, folder, identity, shuffle_names_seed=subject
            )
            write_simulated_lesion_seg(
                paths,
                _on_image_grid(mask, volume.shape),
                folder / "seg.dcm",
                f"{seed}-{site}-{subject}",
            )
            for path, slice_mask in zip(paths, mask, strict=True):
                label = slice_label(int(slice_mask.sum()))
                if label is not None:  # a sliver of a tumour stays unlabelled
                    rows.append(f"{path.relative_to(site_dir / 'dicom').as_posix()},{label}")
            (site_dir / "masks").mkdir(parents=True, exist_ok=True)
            nib.save(
                nib.Nifti1Image(
                    mask.transpose(2, 1, 0).astype(np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])
                ),
                site_dir / "masks" / f"subject-{subject:02d}.nii.gz",
            )
            if on_subject is not None:
                on_subject(site * subjects_per_site + subject + 1, total)
        (site_dir / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        folders.append(site_dir)
    logger.info("wrote %d sites x %d subjects under %s", sites, subjects_per_site, out)
    return folders
