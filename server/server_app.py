"""Flower ServerApp of the coordinator: wiring only (read config, run the job)."""

import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.config import JobConfig
from common.data.arrays import DatasetSplits
from common.data.loading import load_dataset
from common.tasks.registry import task_for
from server.federated_job import TaskSpec, run_federated_job

__all__ = ["app", "create_server_app"]


def create_server_app(
    job: JobConfig | None = None,
    run_dir: Path | None = None,
    splits: DatasetSplits | None = None,
) -> ServerApp:
    """ServerApp for ``job`` writing to ``run_dir``; with None both come from Flower's run config.

    The task's shape and the held-out test set come from the job's dataset, which a
    simulation holds in full: ``splits`` when the caller has loaded it already, else read.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = job if job is not None else JobConfig.from_flat(context.run_config)
        out = run_dir if run_dir is not None else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        data = (
            splits
            if splits is not None
            else load_dataset(config.data, image_size=config.image_size, seed=config.seed)
        )
        names = task_for(config.task).output_names(data)
        task = TaskSpec(data.in_channels, names, data.image_size)
        run_federated_job(grid, config, task, out, test_data=data.test)

    return app


#: The ServerApp named in pyproject.toml, configured by Flower's run config.
app = create_server_app()
