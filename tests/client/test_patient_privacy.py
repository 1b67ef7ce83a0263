"""No DICOM attribute value leaves the site: not in the cache, the reports, the logs, the run."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from identifying_values import SECRETS
from warm_command_lines import run_command_line

pytestmark = pytest.mark.e2e


def _run(program: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_command_line(program, *args, cwd=cwd, timeout=600)


def _readable_content(path: Path) -> bytes:
    """A file's bytes, with .npz members and torch checkpoints unpacked (they may compress)."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return b"".join(
                "\n".join(archive[k].astype(str).ravel()).encode()
                if archive[k].dtype.kind in "US"
                else archive[k].tobytes()
                for k in archive.files
            )
    if path.suffix == ".pt":
        return repr(torch.load(path, weights_only=True)).encode() + path.read_bytes()
    return path.read_bytes()


def test_identifying_values_never_leave_the_site(hospital_export, tmp_path: Path) -> None:
    export, labels, uids = hospital_export
    cache, run = tmp_path / "cache", tmp_path / "run"
    prepared = _run("medfed-site", "prepare", "--data", str(export), "--out", str(cache),
                    "--labels", str(labels), "--size", "32", cwd=tmp_path)  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr
    simulated = _run(
        "medfed-sim", "run", "--data", str(cache), "--sites", "2", "--rounds", "1",
        "--batch-size", "4", "--baseline", "pooled", "--out", str(run), cwd=tmp_path,
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr[-3000:]

    forbidden = [*SECRETS["names"], *SECRETS["ids"], SECRETS["birth_date"], SECRETS["institution"]]
    forbidden += [*uids, *(name.split("^")[0] for name in SECRETS["names"])]
    outputs = {
        "prepare log": (prepared.stdout + prepared.stderr).encode(),
        "simulation log": (simulated.stdout + simulated.stderr).encode(),
    }
    for folder in (cache, run):
        for path in folder.rglob("*"):
            if path.is_file() and path.name != ".site-key":  # 32 random bytes
                outputs[str(path)] = _readable_content(path)
    assert (run / "metrics.json").is_file() and (cache / "dataset.npz").is_file()
    leaks = [
        (value, where)
        for where, blob in outputs.items()
        for value in forbidden
        if value.encode() in blob
    ]
    assert leaks == []
    # The search does find these values where they are: in the hospital's own files.
    raw = next((export / "patient1").rglob("*.dcm")).read_bytes()
    assert SECRETS["names"][1].encode() in raw and SECRETS["institution"].encode() in raw
