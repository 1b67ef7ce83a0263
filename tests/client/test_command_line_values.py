"""Every bad command-line value ends in one line naming it and its exit code, never a traceback;
file names are shown literally; folder names do not reach the JSON report; run folders of jobs
submitted in the same second differ. Commands run in-process through Typer's runner."""

import json
import shutil
import time
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from client.cli import app as site_app
from client.predict_cli import app as predict_app
from common.errors import ConfigError
from common.run_folders import new_run_folder
from server.cli import app as server_app
from simulations.cli import app as sim_app
from simulations.synthetic_lesions import write_synthetic_lesions

#: The option and output path of each command, as {under} (a path inside a regular file).
OUTPUT_UNDER_A_FILE = [
    (server_app, ["provision", "--federation", "{federation}", "--out", "{under}"], "--out"),
    (server_app, ["start", "--kits", "{kits}", "--state", "{under}"], "--state"),
    (site_app, ["start", "--kit", "{kit}", "--data", "{data}", "--state", "{under}"], "--state"),
    (site_app, ["start", "--kit", "{kit}", "--data", "{data}", "--logs", "{under}"], "--logs"),
    (sim_app, ["run", "--data", "{data}", "--out", "{under}"], "--out"),
    (sim_app, ["pretrain", "--data", "{data}", "--out", "{under}.pt"], "--out"),
    (sim_app, ["generate", "--out", "{under}"], "--out"),
    (sim_app, ["generate", "--dataset", "lesions-2d", "--out", "{under}.npz"], "--out"),
]


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """One good CT file and one empty file under a folder named like a patient ID."""
    data = tmp_path / "export"
    (data / "PAT-98765").mkdir(parents=True)
    shutil.copy(get_testdata_file("CT_small.dcm"), data / "ct.dcm")
    (data / "PAT-98765" / "[red]x.dcm").write_bytes(b"")
    return data


def _run(app, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    return result.exit_code, result.output


def _labels(tmp_path: Path) -> Path:
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nct.dcm,a\n")
    return labels


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--size", "-5"], 2, "--size: -5 must be a whole number of pixels >= 8"),
        (["--val-fraction", "-1"], 2, "--val-fraction: -1.0 is not a share in [0, 1)"),
        (["--test-fraction", "1.5"], 2, "--test-fraction: 1.5 is not a share in [0, 1)"),
        (["--val-fraction", "0.5", "--test-fraction", "0.5"], 2, "leaves no study for training"),
        (["--max-pixel-mib", "inf"], 2, "--max-pixel-mib: inf must be a finite number above 0"),
    ],
)
def test_prepare_refuses_bad_numbers(
    export: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    out = tmp_path / "cache"
    base = ["prepare", "--data", str(export), "--out", str(out), "--labels", str(_labels(tmp_path))]
    exit_code, output = _run(site_app, *base, *args)
    assert (exit_code, output.count("error:")) == (code, 1), output
    assert message in " ".join(output.split())
    assert not out.exists()  # refused before anything is written


def test_prepare_refuses_an_out_that_is_a_file_and_a_binary_labels_csv(
    export: Path, tmp_path: Path
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("x")
    labels = _labels(tmp_path)
    code, output = _run(site_app, "prepare", "--data", str(export), "--out", str(taken),
                        "--labels", str(labels))  # fmt: skip
    assert code == 2 and "--out:" in output and "is a file" in output
    binary = tmp_path / "labels.bin.csv"
    binary.write_bytes(b"file,label\n\x89PNG\x00\xff\xfe")
    code, output = _run(site_app, "prepare", "--data", str(export), "--out",
                        str(tmp_path / "cache"), "--labels", str(binary))  # fmt: skip
    assert code == 3 and "labels.bin.csv: not a readable labels CSV" in output


def test_check_refuses_a_report_in_proc_and_a_folder(export: Path, tmp_path: Path) -> None:
    code, output = _run(site_app, "check", "--data", str(export), "--report", "/proc/self/status")
    assert code == 2 and "--report: /proc/self/status is in a kernel or device folder" in output
    code, output = _run(site_app, "check", "--data", str(export), "--report", str(tmp_path))
    assert code == 2 and "is a folder: give a file name" in output


def test_file_names_are_shown_literally_and_folder_names_stay_out_of_the_report(
    export: Path, tmp_path: Path
) -> None:
    report = tmp_path / "qc.json"
    code, output = _run(site_app, "check", "--data", str(export), "--report", str(report))
    assert code == 0, output
    assert "PAT-98765/[red]x.dcm" in output  # rich markup would print 'x.dcm' in red
    text = report.read_text()
    assert "PAT-98765" not in text and "[red]" not in text
    (entry,) = json.loads(text)["skipped_files"]
    assert entry["reason"] == "damaged: empty file (0 bytes)"
    assert entry["path"].startswith("p-") and entry["path"].endswith(".dcm")


def test_predict_and_generate_refuse_bad_values(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("x")
    code, output = _run(predict_app, "predict", "--model", str(taken), "--input",
                        str(tmp_path), "--out", str(taken))  # fmt: skip
    assert code == 2 and "--out:" in output
    code, output = _run(predict_app, "predict", "--model", str(tmp_path / "none.pt"),
                        "--input", str(tmp_path), "--out", str(tmp_path / "o"))  # fmt: skip
    assert code == 3 and "no such checkpoint file (--model)" in output
    code, output = _run(sim_app, "generate", "--out", str(tmp_path / "d"), "--seed", "-1")
    assert code == 2 and "--seed: -1 must be a whole number >= 0" in output
    code, output = _run(sim_app, "generate", "--dataset", "lesions-2d", "--out", str(tmp_path))
    assert code == 2 and "lesions-2d writes one .npz file" in output
    code, output = _run(sim_app, "generate", "--out", str(tmp_path / "d"), "--subjects", "0")
    assert code == 2 and "--subjects: 0" in output


def test_jobs_submitted_in_the_same_second_get_distinct_run_folders(tmp_path: Path) -> None:
    for attempt in range(5):  # retry when the two calls straddle a second boundary
        start = time.strftime("%Y%m%d-%H%M%S")
        first = new_run_folder(tmp_path / f"runs{attempt}", "job")
        second = new_run_folder(tmp_path / f"runs{attempt}", "job")
        if first.name.startswith(start) and second.name.startswith(start):
            break
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == f"{first.name}-2"


def test_an_out_folder_holding_an_earlier_run_is_refused_not_overwritten(tmp_path: Path) -> None:
    data = write_synthetic_lesions(tmp_path / "d.npz", n_train=20, n_val=4, n_test=4, image_size=16)
    earlier = tmp_path / "run"
    earlier.mkdir()
    (earlier / "global_model.pt").write_bytes(b"an earlier run's model")
    code, output = _run(sim_app, "run", "--data", str(data), "--out", str(earlier))
    assert code == 2 and "--out" in output and "already holds files" in output
    assert (earlier / "global_model.pt").read_bytes() == b"an earlier run's model"


@pytest.mark.parametrize("threads", ["0", "-2", "two"])
def test_start_refuses_a_thread_count_that_is_not_a_positive_whole_number(
    tmp_path: Path, threads: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where the node's default state and log folders would go
    code, output = _run(site_app, "start", "--kit", "kit", "--data", "cache", "--threads", threads)
    assert code == 2 and "'--threads'" in output, output
    assert list(tmp_path.iterdir()) == []  # refused before the node starts


@pytest.fixture(scope="module")
def federation_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A provisioned one-site federation and a small dataset, for commands that need them."""
    root = tmp_path_factory.mktemp("federation")
    federation = root / "federation.toml"
    federation.write_text('[coordinator]\naddress = "127.0.0.1"\n[[sites]]\nname = "a"\n')
    code, output = _run(server_app, "provision", "--federation", str(federation), "--out",
                        str(root / "kits"))  # fmt: skip
    assert code == 0, output
    data = write_synthetic_lesions(root / "d.npz", n_train=20, n_val=4, n_test=4, image_size=16)
    return {"federation": str(federation), "kits": str(root / "kits"),
            "kit": str(root / "kits" / "sites" / "a"), "data": str(data)}  # fmt: skip


@pytest.mark.parametrize(
    ("app", "args", "option"),
    OUTPUT_UNDER_A_FILE,
    ids=[f"{app.info.name} {args[0]} {args[-2]}" for app, args, _ in OUTPUT_UNDER_A_FILE],
)
def test_an_output_path_inside_a_file_is_refused_naming_the_option(
    tmp_path: Path, federation_files: dict[str, str], app, args: list[str], option: str
) -> None:
    regular_file = tmp_path / "notes.txt"
    regular_file.write_text("x")
    under = regular_file / "out"
    values = {**federation_files, "under": str(under)}
    code, output = _run(app, *(arg.format(**values) for arg in args))
    assert code == 2 and output.count("error:") == 1, output
    assert f"{option}: {under}" in " ".join(output.split()), output
    assert "unexpected" not in output  # a user's path, not a medfed fault
    assert regular_file.read_text() == "x"


def test_a_runs_folder_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    regular_file = tmp_path / "state"
    regular_file.write_text("x")
    with pytest.raises(ConfigError, match="runs folder: cannot create"):
        new_run_folder(regular_file / "runs", "job")
