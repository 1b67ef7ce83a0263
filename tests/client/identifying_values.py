"""Identifying values written into the test hospital's DICOM headers."""

#: Identifying values written into the test hospital's DICOM headers: none may ever leave.
SECRETS = {
    "names": [f"Secretname^Patient{i}" for i in range(6)],
    "ids": [f"MRN-99{i}4711" for i in range(6)],
    "birth_date": "19450817",
    "institution": "St Elsewhere Confidential Hospital",
}
