"""The site's cache of preprocessed images: written once by `medfed-site prepare`, read every epoch.

Layout of a cache folder (it stays at the site):
    dataset.npz    images and labels in the MedMNIST layout (read by common.data.npz_reader),
                   the patient pseudonym of each image ({split}_patients), and for
                   segmentation data the masks ({split}_masks) and segment_names; volumes
                   (prepare --dims 3) are [N, X, Y, Z] with spatial_dims = 3 and each
                   volume's affine ({split}_affines, voxel index to RAS mm)
    manifest.csv   per image: split, label, series, study and patient pseudonyms, slice index
    qc_report.json the quality report of the data it was built from
    preprocessing.json  the preprocessing contract: how the images were normalised and resampled
                   (common.data.preprocessing_contract), what the job and predict replay
    .site-key      the secret key of the pseudonyms (mode 0600)
No DICOM attribute value is written: series, studies and patients appear only as keyed
pseudonyms (a patient is its PatientID, or its study when the files have none).
"""

import csv
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.atomic_file import replaced_atomically
from common.data.arrays import DEFAULT_SEGMENT_NAMES
from common.data.npz_reader import SPATIAL_DIMS_KEY
from common.data.preprocessing_contract import PreprocessingContract, write_contract
from common.errors import DataFormatError

if TYPE_CHECKING:  # the preprocessing stack (MONAI) is not needed to read a cache
    from common.data.dicom_prepare import PreparedImages
    from common.data.quality import QualityReport

__all__ = [
    "DATASET_FILE",
    "KEY_FILE",
    "MANIFEST_FILE",
    "QC_FILE",
    "assign_splits",
    "write_site_cache",
]

DATASET_FILE = "dataset.npz"
MANIFEST_FILE = "manifest.csv"
QC_FILE = "qc_report.json"
KEY_FILE = ".site-key"
_SPLITS = ("train", "val", "test")


def assign_splits(
    patient_keys: list[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Split by patient, so no patient has images in two splits (no leakage).

    Patients are ordered by a seeded hash of their key; the first share goes to test, the
    next to val, the rest to train, each split getting at least one patient.
    """
    patients = sorted(
        set(patient_keys), key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest()
    )
    if len(patients) < 3:
        raise ValueError(
            f"{len(patients)} labelled patients: at least 3 are needed to split train/val/test "
            "by patient"
        )
    n_test = max(1, round(len(patients) * test_fraction))
    n_val = max(1, round(len(patients) * val_fraction))
    n_test = min(n_test, len(patients) - 2)
    n_val = min(n_val, len(patients) - n_test - 1)
    return {
        patient: "test" if i < n_test else "val" if i < n_test + n_val else "train"
        for i, patient in enumerate(patients)
    }


def write_site_cache(
    out: Path,
    prepared: "PreparedImages",
    class_names: tuple[str, ...],
    report: "QualityReport",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    contract: PreprocessingContract | None = None,
) -> Path:
    """Write the cache folder; returns the path of dataset.npz.

    ``contract`` (what prepared the images) is written as preprocessing.json; without it
    the cache carries none and a job that expects one is refused.
    """
    if not prepared.labels:
        raise DataFormatError(out, "no labelled image to cache (check the labels CSV keys)")
    try:
        split_of_patient = assign_splits(prepared.split_keys, val_fraction, test_fraction, seed)
    except ValueError as exc:
        raise DataFormatError(out, str(exc)) from None
    splits = np.array([split_of_patient[k] for k in prepared.split_keys])
    images = np.clip(np.stack(prepared.images) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # [N, C, H, W] channels (sequences): stored channels last, as MedMNIST. Volumes [N, X, Y, Z]
    # (they come with affines) keep their axes, as their masks do.
    if images.ndim == 4 and not prepared.affines:
        images = images.transpose(0, 2, 3, 1)
    labels = np.asarray(prepared.labels, dtype=np.int64)
    patients = np.asarray(prepared.patient_keys, dtype=str)
    if len(patients) != len(labels):
        raise DataFormatError(out, f"{len(patients)} patient keys for {len(labels)} images")
    arrays: dict[str, np.ndarray] = {"class_names": np.array(class_names)}
    masks = np.stack(prepared.masks) if prepared.masks else None
    if masks is not None:
        if len(masks) != len(labels):
            raise DataFormatError(out, f"{len(masks)} masks for {len(labels)} images")
        arrays["segment_names"] = np.array(prepared.segment_names or DEFAULT_SEGMENT_NAMES)
    affines = np.stack(prepared.affines) if prepared.affines else None
    if affines is not None:
        if len(affines) != len(labels) or images.ndim != 4:
            raise DataFormatError(out, f"{len(affines)} affines for {len(labels)} volumes")
        arrays[SPATIAL_DIMS_KEY] = np.array(3)
    for split in _SPLITS:
        chosen = splits == split
        arrays[f"{split}_images"] = images[chosen]
        arrays[f"{split}_labels"] = labels[chosen]
        arrays[f"{split}_patients"] = patients[chosen]
        if masks is not None:
            arrays[f"{split}_masks"] = masks[chosen]
        if affines is not None:
            arrays[f"{split}_affines"] = affines[chosen]
        report.split_counts[split] = int(chosen.sum())
    out.mkdir(parents=True, exist_ok=True)
    dataset = out / DATASET_FILE
    with replaced_atomically(dataset) as partial:
        # Uncompressed: reads 4x faster, 1.4x the size of zlib's.
        np.savez(partial, allow_pickle=False, **arrays)
    with (out / MANIFEST_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "label", "series", "study", "patient", "slice"])
        for i in range(len(labels)):
            writer.writerow(
                [
                    splits[i],
                    class_names[labels[i]],
                    prepared.series_keys[i],
                    prepared.study_keys[i],
                    prepared.patient_keys[i],
                    prepared.slice_indices[i],
                ]
            )
    (out / QC_FILE).write_text(json.dumps(report.as_dict(), indent=2), encoding="utf-8")
    if contract is not None:
        write_contract(out, contract)
    return dataset
