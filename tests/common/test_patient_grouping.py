"""The patient in the data: pseudonyms in the cache, and splits that never cut a patient in two."""

import csv
from pathlib import Path

import numpy as np
import pytest

from common.data.arrays import DatasetSplits, ImageArrays
from common.data.dicom_prepare import PreprocessingConfig, prepare_series, read_dicom_folder
from common.data.federated_split import split_across_sites
from common.data.label_manifest import read_label_manifest
from common.data.loading import load_dataset
from common.data.npz_reader import read_npz
from common.data.partition import PartitionScheme, partition_indices
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import QualityReport
from common.data.site_cache import MANIFEST_FILE, write_site_cache
from common.errors import DataFormatError
from simulations.dicom_writer import SeriesIdentity, write_dicom_series

_PATIENT_IDS = [f"MRN-{i:04d}" for i in range(8)] + ["", ""]  # the last two have no PatientID


def _export(tmp_path: Path) -> tuple[Path, Path]:
    """10 patients x 2 studies (one 3-slice series each); 2 patients have a blank PatientID."""
    export, rows = tmp_path / "export", ["SeriesInstanceUID,label"]
    rng = np.random.default_rng(0)
    for p, patient_id in enumerate(_PATIENT_IDS):
        for s in range(2):
            identity = SeriesIdentity(patient_id=patient_id, modality="MR")
            volume = 500.0 + rng.normal(0, 20, (3, 16, 16))
            write_dicom_series(volume, (3.0, 1.0, 1.0), export / f"p{p}" / f"s{s}", identity)
            rows.append(f"{identity.series_uid},{'lesion' if (p + s) % 2 else 'normal'}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return export, labels


def _prepare(tmp_path: Path, seed: int) -> Path:
    export, labels = _export(tmp_path)
    config = PreprocessingConfig(size=16)
    manifest = read_label_manifest(labels, ("normal", "lesion"))
    pseudonymise = SitePseudonymiser.from_key_file(tmp_path / "cache" / ".site-key")
    report = QualityReport()
    prepared = prepare_series(
        read_dicom_folder(export, config), config, manifest, pseudonymise, report
    )
    write_site_cache(tmp_path / "cache", prepared, ("normal", "lesion"), report, 0.2, 0.3, seed)
    return tmp_path / "cache"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cache_keys_images_by_patient_pseudonym_and_splits_by_patient(tmp_path, seed):
    cache = _prepare(tmp_path, seed)
    with (cache / MANIFEST_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    studies_of: dict[str, set[str]] = {}
    splits_of: dict[str, set[str]] = {}
    for row in rows:
        studies_of.setdefault(row["patient"], set()).add(row["study"])
        splits_of.setdefault(row["patient"], set()).add(row["split"])
    # 8 patients with a PatientID (2 studies each) + 4 studies standing for their own patient.
    assert sorted(len(s) for s in studies_of.values()) == [1] * 4 + [2] * 8
    assert all(len(s) == 1 for s in splits_of.values())  # (c): no patient in two splits
    assert {next(iter(s)) for s in splits_of.values()} == {"train", "val", "test"}
    with np.load(cache / "dataset.npz") as archive:
        stored = [str(v) for s in ("train", "val", "test") for v in archive[f"{s}_patients"]]
    text = (cache / MANIFEST_FILE).read_text() + " ".join(stored)
    assert {row["patient"] for row in rows} == set(stored)
    assert not any(pid in text for pid in _PATIENT_IDS if pid)  # pseudonyms, never the value

    splits = load_dataset(cache)
    sides = [set(part.patients.tolist()) for part in (splits.train, splits.val, splits.test)]
    assert sum(len(s) for s in sides) == len(set().union(*sides)) == 12
    assert splits.train.num_patients == len(sides[0])


def test_plain_npz_has_no_patients_and_a_shared_patient_is_refused(tmp_path, small_images):
    images = (small_images.images[:, 0] * 255).astype(np.uint8)
    columns = {"images": images[:10], "labels": small_images.labels[:10]}
    arrays = {f"{s}_{k}": v for s in ("train", "val", "test") for k, v in columns.items()}
    np.savez(tmp_path / "plain.npz", **arrays)
    assert read_npz(tmp_path / "plain.npz").train.patients is None

    keys = np.array([f"p{i // 2}" for i in range(10)])
    np.savez(tmp_path / "ok.npz", **arrays, train_patients=keys,
             val_patients=np.char.add("v", keys), test_patients=np.char.add("t", keys))  # fmt: skip
    splits = read_npz(tmp_path / "ok.npz")
    assert splits.train.num_patients == 5 and splits.train.patients.tolist()[:4] == [0, 0, 1, 1]
    np.savez(tmp_path / "leak.npz", **arrays, train_patients=keys,
             val_patients=keys, test_patients=np.char.add("t", keys))  # fmt: skip
    with pytest.raises(DataFormatError, match=r"leak\.npz.*both train and val"):
        read_npz(tmp_path / "leak.npz")


def _grouped(n_patients: int, rng: np.random.Generator) -> ImageArrays:
    sizes = rng.integers(1, 12, n_patients)
    patients = np.repeat(np.arange(n_patients), sizes)
    labels = np.repeat(rng.integers(0, 2, n_patients), sizes)
    images = rng.random((len(labels), 1, 4, 4), dtype=np.float32)
    return ImageArrays(images=images, labels=labels, patients=patients)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet:0.5", "quantity:1.0"])
def test_site_partitioning_never_puts_one_patient_on_two_sites(scheme):
    rng = np.random.default_rng(3)
    train, val = _grouped(60, rng), _grouped(20, rng)
    splits = DatasetSplits(train, val, val, ("a", "b"), Path("x"))
    sites = split_across_sites(splits, 4, PartitionScheme.parse(scheme), seed=5)
    for part in ("train", "val"):
        owners = [set(getattr(site, part).patients.tolist()) for site in sites]
        assert sum(len(o) for o in owners) == len(set().union(*owners))  # disjoint
        assert sum(len(getattr(site, part)) for site in sites) == len(getattr(splits, part))
    # Without the grouping the same draw splits patients across sites (the test can fail).
    loose = partition_indices(train.labels, 4, PartitionScheme.parse(scheme), seed=5)
    owners = [set(train.patients[p].tolist()) for p in loose]
    assert sum(len(o) for o in owners) > len(set().union(*owners))


def test_concatenated_sites_keep_their_patients_apart():
    rng = np.random.default_rng(0)
    a, b = _grouped(5, rng), _grouped(7, rng)
    joined = ImageArrays.concatenate([a, b])
    assert joined.num_patients == 12
    assert ImageArrays.concatenate([a, ImageArrays(b.images, b.labels)]).patients is None
