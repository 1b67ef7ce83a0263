"""One job model: job.toml, Flower's run config and the command line all derive from it."""

import tomllib
from pathlib import Path

import pytest
import tomli_w
from pydantic import BaseModel

from common.errors import ConfigError
from common.federation_job import FederationJob, flatten, load_federation_job
from common.job_options import job_options
from server.job_app import CLIENT_APP, SERVER_APP, app_config
from simulations.commands.run import JOB_OPTIONS, build_job

REPO = Path(__file__).parents[2]


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys |= _leaf_keys(field.annotation, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_every_key_of_job_toml_is_a_run_config_key_and_back(tmp_path: Path) -> None:
    job = FederationJob.model_validate(
        {"name": "brain", "task": "segmentation", "rounds": 4, "class_names": "background,lesion",
         "strategy": {"name": "fedadam"}, "train": {"batch_size": 16}}
    )  # fmt: skip
    path = tmp_path / "job.toml"
    path.write_text(tomli_w.dumps(job.to_nested()))
    assert load_federation_job(path) == job
    # Every key but the optional [preprocessing] table, absent when the job expects none
    # (tests/common/test_preprocessing_contract.py round-trips it).
    assert set(job.to_flat()) == _leaf_keys(FederationJob) - {"preprocessing"}
    config = flatten(app_config(job, tmp_path / "run", resume=True))
    assert FederationJob.from_flat(config) == job  # where a job runs is not part of the job


def test_the_command_line_options_are_the_described_job_fields() -> None:
    described = {
        key
        for key in _leaf_keys(FederationJob)
        if _field(FederationJob, key).description is not None
    }
    assert {option.key for option in JOB_OPTIONS} == described
    flags = [option.flag for option in JOB_OPTIONS]
    assert len(flags) == len(set(flags))  # one option per key
    # The options a user of earlier versions typed still exist.
    assert {"rounds", "lr", "dp", "dp-epsilon", "strategy", "model", "local-epochs"} <= set(flags)
    # Every option reaches its key: each set to a non-default value, then read back.
    values = {"classification": "segmentation", "adam": "sgd", "cnn": "unet", "group": "instance",
              "rdp": "prv", "fedavg": "fedprox", "auto": "image", "mean": "median",
              "float32": "float16", "all": "head"}  # fmt: skip
    # Options whose default is empty take a value of their own kind; class weights need a
    # classification task.
    by_key = {"model.initial_weights": "/srv/medfed/public.pt", "train.class_weights": "1,3",
              "task": "classification", "model.name": "resnet18"}  # fmt: skip
    overrides = {}
    # threshold_data needs two classes, which the doubled num_classes below is not: alone.
    alone = {"threshold_data": "/srv/medfed/public-cache"}
    assert build_job(None, alone).threshold_data == alone["threshold_data"]
    for option in JOB_OPTIONS:
        if option.key in alone:
            continue
        default = _field(FederationJob, option.key).default
        if option.kind is bool:
            overrides[option.key] = not default
        elif option.kind is str:
            overrides[option.key] = by_key.get(option.key) or values[default]
        elif option.key == "site_fraction":  # a fraction of the sites: at most 1
            overrides[option.key] = default / 2
        else:
            overrides[option.key] = default * 2 if default else 1
    job = build_job(None, overrides)
    assert flatten(job.to_nested()) | overrides == flatten(job.to_nested())


def test_help_texts_name_the_models_defaults() -> None:
    rounds = next(o for o in job_options(FederationJob) if o.key == "rounds")
    assert rounds.help.endswith(f"(default: {FederationJob().rounds})")


def test_the_repositorys_app_names_the_apps_every_job_runs() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    app = pyproject["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": SERVER_APP, "clientapp": CLIENT_APP}
    assert FederationJob.from_flat(flatten(app["config"])) == FederationJob()


def test_a_bad_value_names_the_file_the_key_and_the_value(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text("[privacy]\ntarget_epsilon = -1.0\n")
    with pytest.raises(ConfigError) as err:
        load_federation_job(path)
    message = str(err.value)
    assert str(path) in message and "privacy.target_epsilon" in message and "-1.0" in message
    with pytest.raises(ConfigError, match="max_grad_norm"):
        build_job(None, {"privacy.max_grad_norm": float("inf")})
    with pytest.raises(ConfigError, match="class_names has 3 names"):
        build_job(None, {"class_names": "a,b,c"})


def _field(model: type[BaseModel], dotted: str):  # noqa: ANN202
    *sections, name = dotted.split(".")
    for section in sections:
        model = model.model_fields[section].annotation  # type: ignore[assignment]
    return model.model_fields[name]
