from pathlib import Path

import pytest

from common.config import JobConfig, load_job_config
from common.errors import ConfigError


def test_toml_file_is_parsed_with_relative_data_resolved(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(
        'data = "images.npz"\nrounds = 4\npartition = "dirichlet:0.3"\n'
        '[privacy]\ntarget_epsilon = 3.0\n[strategy]\nname = "fedprox"\n'
    )
    job = load_job_config(path)
    assert job.data == tmp_path / "images.npz"
    assert job.rounds == 4
    assert job.partition_scheme.alpha == pytest.approx(0.3)
    assert job.privacy.target_epsilon == 3.0
    assert job.strategy.name == "fedprox"


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('data = "a.npz"\nrounds = 4\n')
    job = load_job_config(path, {"rounds": 7, "privacy.enabled": False})
    assert job.rounds == 7 and job.privacy.enabled is False


def test_bad_value_error_names_file_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('data = "a.npz"\n[privacy]\ntarget_epsilon = -1.0\n')
    with pytest.raises(ConfigError) as err:
        load_job_config(path)
    message = str(err.value)
    assert str(path) in message and "privacy.target_epsilon" in message and "-1.0" in message


def test_unknown_key_and_bad_partition_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('data = "a.npz"\nroundz = 3\n')
    with pytest.raises(ConfigError, match="roundz"):
        load_job_config(path)
    with pytest.raises(ConfigError, match="dirichlet:zero"):
        JobConfig.from_flat({"data": "a.npz", "partition": "dirichlet:zero"})


def test_flat_run_config_round_trips() -> None:
    job = JobConfig.model_validate(
        {"data": "/d.npz", "rounds": 5, "train": {"batch_size": 16}, "model": {"norm": "instance"}}
    )
    assert JobConfig.from_flat(job.to_flat()) == job


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("rounds = = 3")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        load_job_config(path)


def test_pyproject_run_config_is_a_valid_job() -> None:
    """The defaults `flwr run .` passes to the apps must parse."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    job = JobConfig.from_flat(pyproject["tool"]["flwr"]["app"]["config"])
    assert job.privacy.enabled
