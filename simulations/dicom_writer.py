"""Write a volume as a DICOM series (one file per slice) with plausible, configurable headers."""

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

__all__ = ["SeriesIdentity", "write_dicom_series"]

_STORAGE = {"CT": CTImageStorage, "MR": MRImageStorage}

#: Attributes each image IOD requires (Type 1, or Type 2/2C present, possibly empty) that no
#: other part of the writer sets, so the files pass ``dciodvfy`` (PS3.3 C.7.3.1, C.7.4.1, C.8).
_COMMON_ATTRIBUTES: dict[str, object] = {
    "PatientPosition": "HFS",  # Type 2C: required for CT and MR
    "PositionReferenceIndicator": "",  # Type 2: no anatomical reference point
}
_MODALITY_ATTRIBUTES: dict[str, dict[str, object]] = {
    # a T1-weighted 2D spin-echo: the defined terms of PS3.3 C.8.3.1
    "MR": {
        "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"],
        "ScanningSequence": "SE",
        "SequenceVariant": "NONE",
        "ScanOptions": "",
        "MRAcquisitionType": "2D",
        "RepetitionTime": 500.0,
        "EchoTime": 15.0,
        "EchoTrainLength": 1,
    },
    "CT": {"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "KVP": 120.0, "AcquisitionNumber": 1},
}


@dataclass
class SeriesIdentity:
    """Patient, study and scanner attributes written into every file of a series."""

    patient_name: str = "Anonymous^Simulated"
    patient_id: str = "SIM-0000"
    patient_birth_date: str = "19700101"
    patient_sex: str = "O"
    accession_number: str = "SIMACC0001"
    institution: str = "Simulated Hospital"
    manufacturer: str = "SimulatedVendor"
    model_name: str = "SimScanner 1"
    study_date: str = field(default_factory=lambda: dt.date(2024, 1, 1).strftime("%Y%m%d"))
    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    #: One frame of reference per series: its slices share a patient coordinate system.
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    modality: str = "MR"
    #: BodyPartExamined; an unpaired part, so Laterality (Type 2C) is absent.
    body_part: str = "HEAD"


def write_dicom_series(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    out_dir: Path,
    identity: SeriesIdentity,
    rescale: tuple[float, float] = (1.0, 0.0),
    shuffle_names_seed: int | None = None,
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    acquisition: dict[str, object] | None = None,
) -> list[Path]:
    """Write ``volume`` [slices, rows, cols] (stored values, uint16-range) as one file per slice.

    ``spacing`` is (slice, row, col) in mm; positions run along +z. ``rescale`` is
    (slope, intercept) of the modality LUT (CT: stored -> HU). With ``shuffle_names_seed`` the
    file names do not follow slice order, as in real exports, so readers must sort by position.
    ``origin`` is the first slice's ImagePositionPatient (LPS mm, rows along +x, columns +y);
    ``acquisition`` sets further attributes on every file (e.g. SeriesDescription, EchoTime).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = np.clip(np.round(volume), 0, 65535).astype(np.uint16)
    order = np.arange(len(stored))
    if shuffle_names_seed is not None:
        order = np.random.default_rng(shuffle_names_seed).permutation(len(stored))
    paths = []
    for index, pixels in enumerate(stored):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _STORAGE.get(identity.modality, MRImageStorage)
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = identity.patient_name
        ds.PatientID = identity.patient_id
        ds.PatientBirthDate = identity.patient_birth_date
        ds.PatientSex = identity.patient_sex
        ds.AccessionNumber = identity.accession_number
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.StudyTime = ds.SeriesTime = "120000"
        ds.InstitutionName = identity.institution
        ds.Manufacturer = identity.manufacturer
        ds.ManufacturerModelName = identity.model_name
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = identity.study_date
        ds.StudyInstanceUID = identity.study_uid
        ds.SeriesInstanceUID = identity.series_uid
        ds.FrameOfReferenceUID = identity.frame_of_reference_uid
        ds.Modality = identity.modality
        ds.BodyPartExamined = identity.body_part
        for keyword, value in (
            _COMMON_ATTRIBUTES | _MODALITY_ATTRIBUTES.get(identity.modality, {})
        ).items():
            setattr(ds, keyword, value)
        ds.SeriesNumber = 1
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [
            float(origin[0]),
            float(origin[1]),
            float(origin[2] + index * spacing[0]),
        ]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[2])]
        ds.SliceThickness = float(spacing[0])
        ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.PixelData = pixels.tobytes()
        for keyword, value in (acquisition or {}).items():
            setattr(ds, keyword, value)
        path = out_dir / f"IM{order[index]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
