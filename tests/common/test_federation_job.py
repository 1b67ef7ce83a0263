"""job.toml for a real federation: parsed once, round-trips through Flower's run config."""

from pathlib import Path

import pytest

from common.errors import ConfigError
from common.federation_job import RUN_DIR_KEY, FederationJob, load_federation_job


def test_job_toml_round_trips_through_the_flat_run_config(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(
        'name = "brain"\nrounds = 4\nmin_sites = 3\n[strategy]\nname = "fedprox"\n'
        "[train]\nlearning_rate = 0.003\n[privacy]\ntarget_epsilon = 4.0\n"
        "[secure_aggregation]\nreconstruction_threshold = 0.75\n"
    )
    job = load_federation_job(path)
    flat = {**job.to_flat(), RUN_DIR_KEY: "/var/lib/medfed/runs/x"}
    assert flat["secure_aggregation.reconstruction_threshold"] == 0.75
    assert FederationJob.from_flat(flat) == job  # the coordinator's run folder is not the job's


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("rounds = 0\n", "rounds = 0"),
        ('[strategy]\nname = "fedsgd"\n', "strategy.name = 'fedsgd'"),
        ("[secure_aggregation]\nnum_shares = 3\n", "secure_aggregation.num_shares = 3"),
        ("data = 'x.npz'\n", "data"),
    ],
)
def test_a_bad_value_is_named(tmp_path: Path, body: str, named: str) -> None:
    path = tmp_path / "job.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=str(path)) as error:
        load_federation_job(path)
    assert named in str(error.value)


def test_job_tasks_are_the_configured_tasks_and_3d_jobs_need_3d_preprocessing() -> None:
    from typing import get_args

    from common.config import TASKS
    from common.data.preprocessing_contract import PreprocessingContract

    assert get_args(FederationJob.model_fields["task"].annotation) == TASKS
    job = FederationJob.model_validate({"task": "segmentation-3d", "image_size": 48})
    assert job.spatial_shape == (48, 48, 48) and job.model.name == "unet"
    flat = PreprocessingContract(task="segmentation", size=48, dims=2).model_dump(mode="json")
    with pytest.raises(ValueError, match="3D data but preprocessing has dims = 2"):
        FederationJob.model_validate(
            {"task": "segmentation-3d", "image_size": 48, "preprocessing": flat}
        )


def test_float16_updates_are_for_plain_rounds_within_float16_range(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('update_precision = "float16"\n')  # SecAgg+ is on by default
    with pytest.raises(ConfigError, match="plain rounds only") as error:
        load_federation_job(path)
    assert str(path) in str(error.value)
    path.write_text(
        'update_precision = "float16"\n[secure_aggregation]\nenabled = false\n'
        "max_update_norm = 1e6\n"
    )
    with pytest.raises(ConfigError, match="overflow float16"):
        load_federation_job(path)
    path.write_text('update_precision = "bfloat16"\n[secure_aggregation]\nenabled = false\n')
    with pytest.raises(ConfigError, match="update_precision"):
        load_federation_job(path)
    path.write_text('update_precision = "float16"\n[secure_aggregation]\nenabled = false\n')
    job = load_federation_job(path)
    assert job.to_flat()["update_precision"] == "float16"  # reaches Flower's run config
    assert FederationJob.from_flat(job.to_flat()).update_dtype == "float16"
