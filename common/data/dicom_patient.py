"""Which patient a DICOM series belongs to: its PatientID, else its study (kept at the site)."""

import logging

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from common.data.dicom_scan import SeriesFiles

__all__ = ["patient_identity"]

logger = logging.getLogger(__name__)

_PATIENT_ID = Tag(0x00100020)


def patient_identity(series: SeriesFiles) -> str:
    """The identity whose keyed pseudonym groups a series' images into one patient.

    ``PatientID`` of the series' first file; a series without one (blank or absent, as some
    de-identified exports leave it) falls back to its ``StudyInstanceUID``, so that each such
    study counts as its own patient. The value is namespaced ("patient:" or "study:") and only
    ever leaves this function to be hashed: it is never logged or written.
    """
    for header in series.slices[:1]:
        try:
            dataset = pydicom.dcmread(
                header.path, stop_before_pixels=True, specific_tags=[_PATIENT_ID]
            )
        except (OSError, InvalidDicomError, ValueError):
            logger.debug("PatientID unreadable in a series; its study stands for the patient")
            break
        value = str(dataset.get(_PATIENT_ID).value or "").strip() if _PATIENT_ID in dataset else ""
        if value:
            return f"patient:{value}"
    return f"study:{series.study_uid}"
