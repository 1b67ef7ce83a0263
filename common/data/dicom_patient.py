"""Which patient a DICOM series belongs to: its PatientID, else its study (kept at the site)."""

from common.data.dicom_scan import SeriesFiles

__all__ = ["patient_identity"]


def patient_identity(series: SeriesFiles) -> str:
    """The identity whose keyed pseudonym groups a series' images into one patient.

    ``PatientID`` of the series (read once with its first file's header); a series without one
    (blank or absent, as some de-identified exports leave it) falls back to its
    ``StudyInstanceUID``, so that each such study counts as its own patient. The value is
    namespaced ("patient:" or "study:") and only ever leaves this function to be hashed: it is
    never logged or written.
    """
    if series.patient_id:
        return f"patient:{series.patient_id}"
    return f"study:{series.study_uid}"
