"""medfed-sim run's FedAvg rounds in one process, for the DP recipe benches: no Flower, no Ray.

Each round every site trains the global model with ``train_local_round`` (DP-SGD with the noise
calibrated for the whole job on the first round and the accountant kept across rounds, as a
site does) and the sample-weighted mean of their deltas is added to it. SecAgg+'s quantisation
(about 1e-6 on the deltas) is left out.
"""

import torch

from common.data.arrays import ImageArrays
from common.federation_job import FederationJob
from common.initial_weights import initial_state
from common.job_model import build_job_model
from common.local_training import train_local_round
from common.tasks.classification import evaluate_at_validation_threshold

__all__ = ["run_fedavg", "summary"]


def summary(model: torch.nn.Module, val: ImageArrays, test: ImageArrays) -> str:
    """Test ROC-AUC, and balanced accuracy and F1 at the threshold chosen on ``val``."""
    metrics = evaluate_at_validation_threshold(model, val, test)
    return (
        f"roc_auc {metrics['roc_auc']:.3f} balanced_accuracy {metrics['balanced_accuracy']:.3f} "
        f"f1 {metrics['f1']:.3f} threshold {metrics.get('threshold', float('nan')):.3f}"
    )


def run_fedavg(
    job: FederationJob, sites: list[ImageArrays], val: ImageArrays, test: ImageArrays, rounds: int
) -> None:
    """Print the seeded initial model's summary, then a line per round with each site's epsilon."""
    torch.manual_seed(job.seed)  # the job's seeded initial model, as medfed-sim run builds it
    model = build_job_model(job)
    weights = initial_state(job)
    if weights is not None:
        model.load_state_dict(weights)
    print(f"round 0: {summary(model, val, test)}", flush=True)
    states: list = [None] * len(sites)
    for server_round in range(1, rounds + 1):
        start_state = {key: value.clone() for key, value in model.state_dict().items()}
        total = {key: torch.zeros_like(value) for key, value in start_state.items()}
        samples = 0
        spent = []
        for index, train in enumerate(sites):
            local = build_job_model(job)
            local.load_state_dict(start_state)
            seed = 1000 * index + server_round
            update = train_local_round(local, train, job, seed, states[index])
            states[index] = update.privacy_state
            if update.epsilon is not None:
                spent.append(f"{update.epsilon:.3f} ({update.privacy_unit})")
            for key in total:
                total[key] += (update.state_dict[key] - start_state[key]) * update.num_examples
            samples += update.num_examples
        model.load_state_dict({key: start_state[key] + total[key] / samples for key in total})
        line = summary(model, val, test)
        print(f"round {server_round}: {line} epsilon {' / '.join(spent) or '-'}", flush=True)
