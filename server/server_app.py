"""The coordinator's ServerApp, the same on Flower's Simulation Engine and on a real federation.

Wiring only: read the job and where it runs from Flower's run config, build the initial global
model (seeded, or the job's initial weights) or the resumed one and the strategy, run the rounds,
leave the records in the run folder.
"""

import hashlib
import logging
import time
from pathlib import Path

import torch
from flwr.app import Context
from flwr.server import Grid, ServerApp

from common.checkpoint import load_checkpoint, save_checkpoint
from common.federation_job import RESUME_KEY, RUN_DIR_KEY, FederationJob
from common.initial_weights import initial_state
from common.job_model import build_job_model
from common.simulation_environment import SimulationEnvironment
from common.threshold_data import load_threshold_data
from server.central_evaluation import CentralEvaluation
from server.data_threshold import DataThreshold
from server.run_recorder import RunRecorder
from server.secure_rounds import run_rounds
from server.strategies import DeltaFedAvg, RoundHooks

__all__ = ["CHECKPOINT_NAME", "app", "enrolled_names", "run_job", "state_digest"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "global_model.pt"


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names and float32 values (logged when a job resumes)."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def enrolled_names(grid: Grid) -> dict[int, str]:
    """Node ID -> the name each connected node was enrolled under ({} in a simulation)."""
    return {node.node_id: node.name for node in grid.get_nodes() if node.name}


def run_job(grid: Grid, context: Context) -> DeltaFedAvg:
    """Run the job of Flower's run config on the sites connected to ``grid``.

    With the run config's resume flag, the job continues from the run folder's checkpoint:
    the global model of the last completed round, and the rounds after it.
    """
    config = context.run_config
    job = FederationJob.from_flat(config)
    run_dir = Path(str(config.get(RUN_DIR_KEY) or Path("runs") / time.strftime("%Y%m%d-%H%M%S")))
    simulation = SimulationEnvironment.from_run_config(config)
    torch.manual_seed(job.seed)
    model = build_job_model(job)
    state, completed = initial_state(job) or model.state_dict(), 0
    checkpoint = run_dir / CHECKPOINT_NAME
    if bool(config.get(RESUME_KEY, False)):
        saved = load_checkpoint(checkpoint)
        state, completed = saved["state_dict"], int(saved["round"])
        logger.info(
            "job %s resumes after round %d/%d from global model %s",
            job.name, completed, job.rounds, state_digest(state),
        )  # fmt: skip
        recorder = RunRecorder.resume(run_dir, job.rounds, completed)
    else:
        recorder = RunRecorder(run_dir, job.rounds)
    central = (
        CentralEvaluation(job, simulation.test_data)
        if simulation is not None and simulation.test_data
        else None
    )
    threshold_data = load_threshold_data(job)
    hooks = RoundHooks(
        checkpoint=lambda r, s, m: save_checkpoint(checkpoint, s, job, r, m),
        evaluate=central,
        evaluate_at=central.at_threshold if central is not None else None,
        threshold=DataThreshold(job, threshold_data) if threshold_data is not None else None,
        completed_rounds=completed,
        enrolled_names=lambda: enrolled_names(grid),
    )
    strategy = DeltaFedAvg(job, state, recorder, hooks, job.min_sites)
    remaining = job.rounds - completed
    mode = "SecAgg+" if job.secure_aggregation.enabled else "plain"
    logger.info(
        "job %s: %d round(s) to run, at least %d sites, %s %s",
        job.name, remaining, job.min_sites, mode, job.strategy.name,
    )  # fmt: skip
    if remaining > 0:
        run_rounds(
            grid, context, strategy, remaining, job.secure_aggregation,
            [array.shape for array in strategy.global_arrays], on_rejected=strategy.reject_reply,
            on_failed=strategy.fail_reply,
        )  # fmt: skip
    recorder.write()
    logger.info("job %s finished; global model in %s", job.name, checkpoint)
    return strategy


def _log_through_flower() -> None:
    """Send medfed's log lines to Flower's handlers, which stream them to `flwr run`."""
    flower = logging.getLogger("flwr")
    for name in ("server", "common"):
        ours = logging.getLogger(name)
        ours.handlers = list(flower.handlers)
        ours.setLevel(logging.INFO)
        ours.propagate = False


#: The ServerApp named in pyproject.toml and in every job's app folder.
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point of `flwr run` on either engine."""
    _log_through_flower()
    run_job(grid, context)
