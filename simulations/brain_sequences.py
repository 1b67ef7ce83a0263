"""Multi-sequence demo studies: T1, T2 and FLAIR per subject, each with its own known pose.

Anatomy: the MNI152 grey-matter and white-matter maps and brain mask shipped in nilearn (CSF is
the brain mask minus both), plus the T1 template outside the brain (scalp, skull). Each
sequence mixes the tissue maps with its own contrast (CSF dark on T1 and FLAIR, bright on T2;
lesions FLAIR- and T2-bright, only slightly darker than white matter on T1, as oedema and
non-enhancing lesions are in real MR, so the T1 channel alone barely shows them). Each subject
has a head pose (rotation, scale, shift) and each of its sequences a further small rigid motion,
both known: every series is sampled from the template through one affine map G (series LPS
point -> template LPS point), written to ``OUT/site-K/true_transforms.json`` so registration
error can be measured. The DICOM
geometry is the real one (LPS, axial slices, ImagePositionPatient in template mm), so with the
identity transform a series sits on the atlas up to its pose. The lesion mask is a DICOM SEG
over the first sequence. Everything here is simulated: it says nothing about clinical accuracy.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.spatial.transform import Rotation

from simulations.brain_lesions import (
    SITE_SCANNERS,
    SLICE_RANGE,
    ScannerSignature,
    _bias_field,
    _lesions,
    subject_identity,
)
from simulations.dicom_writer import write_dicom_series
from simulations.seg_writer import write_simulated_lesion_seg

__all__ = ["SEQUENCES", "TRUTH_FILE", "write_sequence_sites"]

logger = logging.getLogger(__name__)

#: The true transforms of a site's series (per subject and sequence, 4x4 LPS mm matrices).
TRUTH_FILE = "true_transforms.json"
_SLICE_MM = 2.0


@dataclass(frozen=True)
class Contrast:
    """One sequence: tissue intensities, lesion intensity, and its DICOM acquisition values."""

    csf: float
    gm: float
    wm: float
    outside: float  # scale of the T1 template outside the brain (scalp, skull)
    lesion: float
    echo_ms: float
    repetition_ms: float
    inversion_ms: float | None = None


SEQUENCES: dict[str, Contrast] = {
    "T1": Contrast(0.20, 0.55, 0.85, 1.0, 0.78, 2.5, 2300.0, 900.0),
    "T2": Contrast(1.00, 0.60, 0.40, 0.5, 0.90, 90.0, 5000.0),
    "FLAIR": Contrast(0.08, 0.60, 0.45, 0.4, 1.00, 120.0, 9000.0, 2500.0),
}


@dataclass(frozen=True)
class _Anatomy:
    """Template maps [i, j, k] (2 mm) and the template's voxel -> LPS mm map."""

    maps: dict[str, np.ndarray]
    index_to_lps: np.ndarray  # 4x4

    @property
    def lps_to_index(self) -> np.ndarray:
        return np.linalg.inv(self.index_to_lps)


def _anatomy() -> _Anatomy:
    from nilearn.datasets import (  # imported here: nilearn takes seconds to import
        load_mni152_brain_mask,
        load_mni152_gm_template,
        load_mni152_template,
        load_mni152_wm_template,
    )

    t1 = load_mni152_template(resolution=2)
    maps = {
        name: np.asarray(loader(resolution=2).get_fdata(), dtype=np.float32)
        for name, loader in (
            ("t1", load_mni152_template),
            ("gm", load_mni152_gm_template),
            ("wm", load_mni152_wm_template),
            ("brain", load_mni152_brain_mask),
        )
    }
    maps["brain"] = gaussian_filter(maps["brain"], 0.7)
    maps["csf"] = np.clip(maps["brain"] - maps["gm"] - maps["wm"], 0.0, 1.0)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS -> LPS
    return _Anatomy(maps, flip @ np.asarray(t1.affine, dtype=float))


def _rigid(rng: np.random.Generator, degrees: float, mm: float, centre: np.ndarray) -> np.ndarray:
    """A 4x4 rotation about ``centre`` (random axis, up to ``degrees``) and shift up to ``mm``."""
    rotation = Rotation.from_rotvec(rng.uniform(-1, 1, 3) * np.deg2rad(degrees) / np.sqrt(3))
    out = np.eye(4)
    out[:3, :3] = rotation.as_matrix()
    out[:3, 3] = centre - out[:3, :3] @ centre + rng.uniform(-mm, mm, 3)
    return out


def _pose(rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """A subject's head pose: rotation up to ~8 deg, shift up to 5 mm, head size 0.93-1.07."""
    pose = _rigid(rng, 8.0, 5.0, centre)
    scale = np.eye(4)
    scale[:3, :3] *= rng.uniform(0.93, 1.07)
    scale[:3, 3] = centre - scale[:3, :3] @ centre
    return pose @ scale


def _grid(spacing_mm: float, anatomy: _Anatomy) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Origin (LPS mm) and shape [z, y, x] of a site's axial grid over the template's field."""
    shape = np.asarray(anatomy.maps["t1"].shape)
    corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in SLICE_RANGE])  # fmt: skip
    lps = (anatomy.index_to_lps @ corners.T).T[:, :3]
    low, high = lps.min(0), lps.max(0)
    columns, rows = (np.floor((high[:2] - low[:2]) / spacing_mm) + 1).astype(int)
    slices = SLICE_RANGE[1] - SLICE_RANGE[0]
    return low, (slices, int(rows), int(columns))


def _sample(volume: np.ndarray, points: np.ndarray, anatomy: _Anatomy, order: int) -> np.ndarray:
    index = (anatomy.lps_to_index @ np.c_[points, np.ones(len(points))].T)[:3]
    return map_coordinates(volume, index, order=order, mode="constant", cval=0.0)


def _series(
    contrast: Contrast,
    anatomy: _Anatomy,
    lesion: np.ndarray,
    to_template: np.ndarray,
    origin: np.ndarray,
    shape: tuple[int, int, int],
    scanner: ScannerSignature,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Stored values [z, y, x] of one sequence, and its lesion mask, on the site's grid."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    steps = (scanner.pixel_spacing_mm, scanner.pixel_spacing_mm, _SLICE_MM)
    points = np.c_[
        origin[0] + x.ravel() * steps[0],
        origin[1] + y.ravel() * steps[1],
        origin[2] + z.ravel() * steps[2],
    ]
    moved = (to_template @ np.c_[points, np.ones(len(points))].T).T[:, :3]
    maps = {name: _sample(anatomy.maps[name], moved, anatomy, 1) for name in anatomy.maps}
    soft = _sample(lesion, moved, anatomy, 1)
    tissue = contrast.csf * maps["csf"] + contrast.gm * maps["gm"] + contrast.wm * maps["wm"]
    image = tissue + contrast.outside * maps["t1"] * (1.0 - np.clip(maps["brain"], 0, 1))
    image = (1.0 - soft) * image + soft * contrast.lesion
    image = image.reshape(shape) * _bias_field(shape, scanner.bias_strength, rng)
    image = np.clip(image, 0, None) ** scanner.gamma
    image = image + np.abs(rng.normal(0, scanner.noise, shape))
    return image * 1000.0, (soft.reshape(shape) >= 0.5).astype(np.uint8)


def write_sequence_sites(
    out: Path,
    sequences: tuple[str, ...],
    sites: int = 3,
    subjects_per_site: int = 10,
    seed: int = 0,
    on_subject: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write ``sites`` folders of studies with one series per sequence; returns the folders.

    Study J of site K is ``OUT/site-K/dicom/subject-J/<sequence>/`` with a DICOM SEG of the
    lesions over the first sequence (``seg.dcm`` beside the sequence folders).
    """
    unknown = [s for s in sequences if s not in SEQUENCES]
    if unknown or not sequences:
        raise ValueError(f"sequences must be among {list(SEQUENCES)}, got {list(sequences)}")
    if not 1 <= sites <= len(SITE_SCANNERS):
        raise ValueError(f"sites must be 1-{len(SITE_SCANNERS)}, got {sites}")
    anatomy = _anatomy()
    brain = np.argwhere(anatomy.maps["brain"] > 0.5).mean(0)
    centre = (anatomy.index_to_lps @ np.r_[brain, 1.0])[:3]
    rng = np.random.default_rng(seed)
    folders = []
    for site in range(sites):
        scanner = SITE_SCANNERS[site]
        site_dir = out / f"site-{site}"
        origin, shape = _grid(scanner.pixel_spacing_mm, anatomy)
        truth: dict[str, dict[str, list[list[float]]]] = {}
        for subject in range(subjects_per_site):
            name = f"subject-{subject:02d}"
            lesion = gaussian_filter(_lesions(anatomy.maps["wm"], rng).astype(np.float32), 0.7)
            pose = _pose(rng, centre)
            seed_text = f"{seed}-{site}-{subject}"
            first_paths: list[Path] = []
            first_mask = None
            truth[name] = {}
            for number, sequence in enumerate(sequences, start=1):
                motion = _rigid(rng, 3.0, 3.0, centre)
                to_template = pose @ motion
                truth[name][sequence] = to_template.tolist()
                volume, mask = _series(
                    SEQUENCES[sequence], anatomy, lesion, to_template, origin, shape, scanner, rng
                )
                identity = subject_identity(scanner, seed, site, subject, sequence)
                contrast = SEQUENCES[sequence]
                acquisition: dict[str, object] = {
                    "SeriesDescription": sequence,
                    "ProtocolName": sequence,
                    "SeriesNumber": number,
                    "EchoTime": contrast.echo_ms,
                    "RepetitionTime": contrast.repetition_ms,
                }
                if contrast.inversion_ms is not None:
                    acquisition["InversionTime"] = contrast.inversion_ms
                paths = write_dicom_series(
                    volume,
                    (_SLICE_MM, scanner.pixel_spacing_mm, scanner.pixel_spacing_mm),
                    site_dir / "dicom" / name / sequence,
                    identity,
                    shuffle_names_seed=subject,
                    origin=(float(origin[0]), float(origin[1]), float(origin[2])),
                    acquisition=acquisition,
                )
                if number == 1:
                    first_paths, first_mask = paths, mask
            if first_mask is not None:
                write_simulated_lesion_seg(
                    first_paths, first_mask, site_dir / "dicom" / name / "seg.dcm", seed_text
                )
            if on_subject is not None:
                on_subject(site * subjects_per_site + subject + 1, sites * subjects_per_site)
        site_dir.mkdir(parents=True, exist_ok=True)
        (site_dir / TRUTH_FILE).write_text(
            json.dumps({"maps": "series LPS mm -> MNI152 template LPS mm", "subjects": truth}),
            encoding="utf-8",
        )
        folders.append(site_dir)
    logger.info("wrote %d sites x %d subjects (%s) under %s", sites, subjects_per_site,
                ",".join(sequences), out)  # fmt: skip
    return folders
