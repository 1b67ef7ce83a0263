"""Free DP levers on PneumoniaMNIST in one process: averaged iterates, flip TTA, augmentation.

Usage: .venv/bin/python bench/pneumonia_dp_levers.py --data hospitals.npz [--weights public.pt]
[--trainable all] [--optimizer sgd] [--lr 0.5] [--batch 512] [--rounds 10] [--epochs 2] [--eps 8]
[--augment none|flip|shift|flip-shift] [--aug-mult 1] [--ema 0.5,0.8] [--tail 2,3,5]
[--noise-seed 0] [--no-dp]

The federation of bench/federated_dp_sweep.py (the data split across ``--sites`` as
``medfed-sim run`` splits it; every site trains the global model each round with image-level
DP-SGD, the noise calibrated for the whole job and the accountant kept across rounds; FedAvg of
the deltas, no Flower, Ray or SecAgg+), scored after every round as it stands and with
post-processing that costs no privacy (it only reads the released global models):

- ``ema D``: an exponential moving average of the global models, ``a <- D a + (1 - D) w_t``
  from round 1 (De et al., "Unlocking High-Accuracy Differentially Private Image Classification
  through Scale", 2022, arXiv:2204.13650, average their iterates);
- ``tail K`` (after the last round): the uniform average of the last K global models (Polyak);
- ``flip``: each of them again with test-time augmentation, the probabilities of each test
  image and its mirror image averaged.

``--augment`` with ``--aug-mult K`` trains with augmentation multiplicity (De et al.): each
sampled image's gradient is the mean of the per-sample gradients of K augmented copies, clipped
as one, so the image stays the privacy unit and the accounting is unchanged; K = 1 is plain
augmentation. With ``--no-dp`` every batch is augmented afresh instead (``--sites 1
--partition iid`` is the pooled baseline: medfed-sim's pooled baseline also runs
``train_local_round`` round by round). Without ``--augment`` the sites run
``train_local_round`` itself.
``--noise-seed N`` changes every site's training seed (Poisson draws, DP noise) and nothing
else: an independent repeat on the same split and initial model.
Prints the test ROC-AUC of every model each round, epsilon with its unit, the tail averages and
the process's CPU time.
"""

import argparse
import time

import numpy as np
import torch
from federated_dp_sweep import add_job_options, job_from_args
from pneumonia_augmentation import AUGMENTATIONS, augment, average_states, flip_average
from torch import nn
from torch.optim import Optimizer

from common.data.arrays import ImageArrays
from common.data.federated_split import split_across_sites
from common.data.loading import load_dataset
from common.data.partition import PartitionScheme
from common.federation_job import FederationJob
from common.initial_weights import initial_state
from common.job_model import build_job_model
from common.local_training import LocalUpdate, _optimizer, train_local_round
from common.models import freeze_all_but
from common.privacy.accounting import PrivacyState
from common.privacy.image_dp import SitePrivacyEngine
from common.privacy.per_sample_gradients import clip_and_sum, per_sample_gradients, trainable
from common.tasks.classification import predict_probabilities
from common.tasks.metrics import classification_metrics
from common.tasks.registry import task_for
from common.tasks.training import make_loader, train_private_epochs
from simulations.runner import fit_job_to_data

#: Sampled images whose augmented copies' per-sample gradients are held at once (memory only).
CHUNK = 64


class AugmentedEngine(SitePrivacyEngine):
    """Image-level DP-SGD whose per-image gradient is the mean over K augmented copies."""

    def __init__(self, augmentation: str, multiplicity: int, **kwargs: object) -> None:
        """Opacus' engine of the site (``kwargs``), with the augmentation and its multiplicity."""
        super().__init__(**kwargs)  # type: ignore[arg-type]  # the engine's own keywords
        self.augmentation = augmentation
        self.multiplicity = multiplicity

    def apply_step(
        self,
        model: nn.Module,
        criterion: nn.Module,
        images: torch.Tensor,
        targets: torch.Tensor,
        optimizer: Optimizer,
        generator: torch.Generator | None = None,
    ) -> float:
        """Clip each image's mean augmented gradient to C, add the engine's noise, step."""
        params = trainable(model)
        clipped = [torch.zeros_like(p) for p in params]
        total_loss = 0.0
        k = self.multiplicity
        for start in range(0, len(targets), CHUNK):
            chunk_images = images[start : start + CHUNK]
            chunk_targets = targets[start : start + CHUNK]
            copies = torch.cat([augment(chunk_images, self.augmentation) for _ in range(k)])
            grads, loss = per_sample_gradients(model, criterion, copies, chunk_targets.repeat(k))
            total_loss += loss / k
            means = [g.view(k, len(chunk_targets), *g.shape[1:]).mean(0) for g in grads]
            parts = clip_and_sum(means, self.config.max_grad_norm)
            for total, part in zip(clipped, parts, strict=True):
                total.add_(part)
        std = self.noise_multiplier * self.config.max_grad_norm
        for p, total in zip(params, clipped, strict=True):
            noise = torch.normal(0.0, std, size=p.shape, generator=generator)
            p.grad = total.add_(noise).div_(self._expected_batch_size)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self._engine.accountant.step(
            noise_multiplier=self.noise_multiplier, sample_rate=self._sample_rate
        )
        return total_loss


def _augmented_round(
    model: nn.Module,
    data: ImageArrays,
    job: FederationJob,
    seed: int,
    state: PrivacyState | None,
    args: argparse.Namespace,
) -> LocalUpdate:
    """train_local_round's image-level DP path with :class:`AugmentedEngine` (or no DP)."""
    torch.manual_seed(seed)
    model.train()
    freeze_all_but(model, job.model.name, job.train.trainable)
    task = task_for(job.task)
    if not job.privacy.enabled:
        return _augmented_plain_round(model, data, job, seed, args.augment)
    engine = AugmentedEngine(
        args.augment,
        args.aug_mult,
        config=job.privacy,
        num_samples=len(data),
        batch_size=job.train.batch_size,
        planned_epochs=job.rounds * job.train.local_epochs,
        state=state,
    )
    stats = train_private_epochs(
        model,
        torch.from_numpy(data.images),
        torch.from_numpy(task.targets(data)),
        engine,
        _optimizer(model, job),
        job.train.local_epochs,
        task.criterion(job),
    )
    return LocalUpdate(
        state_dict={key: value.detach().clone() for key, value in model.state_dict().items()},
        num_examples=len(data),
        loss=stats.loss,
        steps=stats.steps,
        epsilon=engine.epsilon(),
        privacy_state=engine.export_state(),
        privacy_unit="image",
    )


def _augmented_plain_round(
    model: nn.Module, data: ImageArrays, job: FederationJob, seed: int, augmentation: str
) -> LocalUpdate:
    """train_local_round without DP, each batch augmented afresh (one copy per image)."""
    task = task_for(job.task)
    loader = make_loader(data.images, task.targets(data), job.train.batch_size, True, seed)
    optimizer, criterion = _optimizer(model, job), task.criterion(job)
    total, seen = 0.0, 0
    for _ in range(job.train.local_epochs):
        for images, targets in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(augment(images, augmentation)), targets)
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(targets), seen + len(targets)
    return LocalUpdate(
        state_dict={key: value.detach().clone() for key, value in model.state_dict().items()},
        num_examples=len(data),
        loss=total / max(seen, 1),
        steps=0,
        epsilon=None,
        privacy_state=None,
    )


def _auc(probabilities: np.ndarray, test: ImageArrays) -> float:
    return classification_metrics(test.labels, probabilities)["roc_auc"]


def _scores(model: nn.Module, state: dict[str, torch.Tensor], test: ImageArrays) -> str:
    """Test ROC-AUC of ``state`` as it is and with flip TTA."""
    model.load_state_dict(state)
    plain = _auc(predict_probabilities(model, test), test)
    return f"{plain:.4f} flip {_auc(flip_average(model, test), test):.4f}"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_job_options(parser, optimizer="sgd", lr=0.5, batch=512)
    parser.add_argument("--augment", default="none", choices=AUGMENTATIONS)
    parser.add_argument("--aug-mult", type=int, default=1, help="augmented copies per image")
    parser.add_argument("--ema", default="0.5,0.8", help="EMA decays, comma-separated")
    parser.add_argument("--tail", default="2,3,5", help="last-K uniform averages")
    parser.add_argument(
        "--noise-seed", type=int, default=0, help="other sites' seeds: independent DP noise"
    )
    return parser.parse_args()


def main() -> None:
    """Parse the options, run the rounds, print every model's test ROC-AUC per round."""
    args = _parse()
    start = time.process_time()
    job = job_from_args(args)
    splits = load_dataset(args.data, image_size=job.image_size, seed=job.seed)
    job = fit_job_to_data(job, splits)
    sites = split_across_sites(splits, args.sites, PartitionScheme.parse(args.partition), job.seed)
    trains = [site.train for site in sites]
    test = splits.test
    torch.manual_seed(job.seed)  # the job's seeded initial model, as medfed-sim run builds it
    model = build_job_model(job)
    weights = initial_state(job)
    if weights is not None:
        model.load_state_dict(weights)
    decays = [float(d) for d in args.ema.split(",") if d]
    global_state = {key: value.clone() for key, value in model.state_dict().items()}
    print(f"round 0: {_scores(model, global_state, test)}", flush=True)
    history: list[dict[str, torch.Tensor]] = []
    emas: dict[float, dict[str, torch.Tensor]] = {}
    states: list[PrivacyState | None] = [None] * len(trains)
    for server_round in range(1, args.rounds + 1):
        total = {key: torch.zeros_like(value) for key, value in global_state.items()}
        samples, spent = 0, []
        for index, train in enumerate(trains):
            local = build_job_model(job)
            local.load_state_dict(global_state)
            seed = 1000 * index + server_round + 100_000 * args.noise_seed
            if args.augment == "none":
                update = train_local_round(local, train, job, seed, states[index])
            else:
                update = _augmented_round(local, train, job, seed, states[index], args)
            states[index] = update.privacy_state
            if update.epsilon is not None:
                spent.append(f"{update.epsilon:.3f} ({update.privacy_unit})")
            for key in total:
                total[key] += (update.state_dict[key] - global_state[key]) * update.num_examples
            samples += update.num_examples
        global_state = {key: global_state[key] + total[key] / samples for key in total}
        history.append(global_state)
        for decay in decays:
            previous = emas.get(decay, global_state)
            emas[decay] = {k: decay * previous[k] + (1 - decay) * global_state[k] for k in total}
        line = f"round {server_round}: auc {_scores(model, global_state, test)}"
        for decay in decays:
            line += f" | ema {decay} {_scores(model, emas[decay], test)}"
        print(f"{line} | epsilon {' / '.join(spent) or '-'}", flush=True)
    for tail in (int(k) for k in args.tail.split(",") if k):
        if tail <= len(history):
            averaged = average_states(history[-tail:])
            print(f"tail {tail}: auc {_scores(model, averaged, test)}", flush=True)
    print(f"cpu {time.process_time() - start:.0f} s")


if __name__ == "__main__":
    main()
