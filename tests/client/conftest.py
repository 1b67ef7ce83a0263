from pathlib import Path

import numpy as np
import pytest
from identifying_values import SECRETS

from simulations.dicom_writer import SeriesIdentity, write_dicom_series


@pytest.fixture
def hospital_export(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """Six CT studies (one series of 5 slices each) in nested folders, a labels CSV, and junk.

    Lesion series (label 1) hold a bright blob; one slice file is truncated; a README sits among
    the images. Returns (export folder, labels CSV, every UID written).
    """
    export = tmp_path / "export"
    rows = ["SeriesInstanceUID,label"]
    uids: list[str] = []
    rng = np.random.default_rng(0)
    for i in range(6):
        identity = SeriesIdentity(
            patient_name=SECRETS["names"][i],
            patient_id=SECRETS["ids"][i],
            patient_birth_date=SECRETS["birth_date"],
            institution=SECRETS["institution"],
            modality="CT",
        )
        volume = 1000.0 + rng.normal(0, 20, (5, 32, 32))
        if i % 2:
            volume[:, 12:20, 12:20] += 300
        folder = export / f"patient{i}" / "study" / "series"
        write_dicom_series(volume, (3.0, 0.7, 0.7), folder, identity, rescale=(1.0, -1024.0))
        rows.append(f"{identity.series_uid},{'lesion' if i % 2 else 'normal'}")
        uids += [identity.series_uid, identity.study_uid]
    victim = export / "patient0" / "study" / "series" / "IM0002.dcm"
    victim.write_bytes(victim.read_bytes()[:-500])
    (export / "README.txt").write_text("exported by PACS")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return export, labels, uids
