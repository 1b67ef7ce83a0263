"""Membership-inference audit of a simulated run's global model, per patient, with a control.

Members are the patients of the simulated sites' training splits; non-members the patients of
the held-out test split, which no site trained on, or every patient of other data given for
them (e.g. fresh patients of the same hospitals' scanners: enough of them to resolve an AUC of
0.55 from 0.5), refused when it shares an image with the members or was prepared differently.
Two attack scores per patient:

- ``loss``: minus the mean cross-entropy over the patient's images (Yeom et al., "Privacy Risk
  in Machine Learning", CSF 2018, arXiv:1709.01604): a member is guessed when its loss is low.
- ``calibrated``: the reference model's mean loss minus the target's (difficulty calibration:
  Watson et al., "On the Importance of Difficulty Calibration in Membership Inference
  Attacks", ICLR 2022, arXiv:2111.08440; the offline reference-model idea of LiRA, Carlini et
  al., "Membership Inference Attacks From First Principles", S&P 2022, arXiv:2112.03199). The
  reference never saw the hospitals' patients: the job's initial weights (e.g. pretrained on
  public data), or a checkpoint given for it. It removes what makes a patient easy or hard for
  any model, so it is a stronger attack than ``loss``, not a weaker one.

Each score is evaluated twice: on all patients, and composition-matched (the non-members
reweighted to the members' class mix, :mod:`simulations.membership_statistics`), because
members and non-members may differ in class mix and a loss that depends on a patient's classes
then separates them without any membership. The audit reports ROC-AUC (0.5: a coin), its
Hanley-McNeil standard error and the TPR at 1% FPR (Carlini et al. 2022).
"""

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from common import message_keys as keys
from common.checkpoint import load_checkpoint
from common.data.arrays import DatasetSplits, ImageArrays
from common.data.loading import load_dataset
from common.errors import ConfigError
from common.federation_job import FederationJob, load_federation_job
from common.initial_weights import initial_state
from common.models import build_model
from common.simulation_environment import SITE_DATA_FILE
from server.job_app import JOB_FILE
from server.server_app import CHECKPOINT_NAME
from simulations.membership_statistics import (
    LOW_FPR,
    AttackFigures,
    attack_figures,
    composition_strata,
    composition_weights,
)
from simulations.runner import SETTINGS_FILE
from simulations.simulation_settings import SimulationSettings

__all__ = [
    "LOW_FPR",
    "AttackResult",
    "AuditResult",
    "audit_run",
    "patient_means",
    "patient_scores",
]

logger = logging.getLogger(__name__)

#: Attack scores: minus the target's loss, and the reference's loss minus the target's.
LOSS_ATTACK, CALIBRATED_ATTACK = "loss", "calibrated"
#: Evaluations: every patient, or non-members reweighted to the members' class mix.
ALL_PATIENTS, COMPOSITION_MATCHED = "all", "class-mix matched"


@dataclass(frozen=True)
class AttackResult:
    """One attack score under one evaluation."""

    attack: str
    evaluation: str
    figures: AttackFigures

    def to_dict(self) -> dict[str, object]:
        """Plain values for JSON."""
        return {"attack": self.attack, "evaluation": self.evaluation, **self.figures.to_dict()}


@dataclass(frozen=True)
class AuditResult:
    """The attacks' success on one run's global model, with what they were measured on."""

    run_dir: str
    dp: bool
    epsilon: float | None
    unit: str
    members: int
    non_members: int
    #: Mean loss of members and non-members (the generalisation gap the loss attack exploits).
    member_loss: float
    non_member_loss: float
    #: Mean over patients of each class's share of their images, members and non-members.
    member_mix: tuple[float, ...]
    non_member_mix: tuple[float, ...]
    #: The checkpoint of the calibrated attack's reference model; None: no calibrated attack.
    reference: str | None
    #: Where the non-members came from: the run's test split, or data given for them.
    non_member_source: str
    attacks: tuple[AttackResult, ...]

    def to_dict(self) -> dict[str, object]:
        """Plain values for JSON."""
        plain = asdict(self)
        plain["attacks"] = [attack.to_dict() for attack in self.attacks]
        return plain

    def attack(self, attack: str, evaluation: str = ALL_PATIENTS) -> AttackFigures:
        """The figures of one attack and evaluation.

        Raises:
            KeyError: when the audit did not run it (no reference: no calibrated attack).
        """
        for result in self.attacks:
            if (result.attack, result.evaluation) == (attack, evaluation):
                return result.figures
        raise KeyError(f"{attack} ({evaluation}) was not run on {self.run_dir}")


@dataclass(frozen=True)
class _Patients:
    """Per patient: the target's and the reference's mean loss, and the class mix."""

    loss: np.ndarray
    reference_loss: np.ndarray | None
    mix: np.ndarray


@dataclass(frozen=True)
class _Model:
    """A network to attack or to calibrate with, and the checkpoint it came from."""

    network: torch.nn.Module
    source: str


@torch.no_grad()
def _image_losses(model: _Model, data: ImageArrays, batch_size: int = 256) -> np.ndarray:
    """Cross-entropy per image; refuses, naming the checkpoint, a loss that is not finite."""
    model.network.eval()
    losses = []
    for start in range(0, len(data), batch_size):
        images = torch.from_numpy(data.images[start : start + batch_size])
        labels = torch.from_numpy(data.labels[start : start + batch_size])
        logits = model.network(images)
        losses.append(torch.nn.functional.cross_entropy(logits, labels, reduction="none"))
    values = torch.cat(losses).numpy() if losses else np.zeros(0)
    broken = int((~np.isfinite(values)).sum())
    if broken:
        raise ConfigError(
            model.source,
            f"the loss is not finite on {broken} of {len(values)} images: a diverged model "
            "(NaN or infinite weights) cannot be audited",
        )
    return values


def patient_means(values: np.ndarray, patients: np.ndarray | None) -> np.ndarray:
    """Mean of per-image ``values`` ([N] or [N, K]) over each patient's images.

    Patients come in the order of their sorted ids; without patient ids every image is its own
    unit.
    """
    if patients is None:
        return values.astype(np.float64)
    _, owner = np.unique(patients, return_inverse=True)
    counts = np.bincount(owner)
    if values.ndim == 1:
        return np.bincount(owner, weights=values) / counts
    return np.stack([np.bincount(owner, weights=column) / counts for column in values.T], axis=1)


def patient_scores(losses: np.ndarray, patients: np.ndarray | None) -> np.ndarray:
    """Loss-attack score per patient: minus the mean loss over the patient's images."""
    return -patient_means(losses, patients)


def _patients(
    data: ImageArrays, model: _Model, reference: _Model | None, num_classes: int
) -> tuple[_Patients, np.ndarray]:
    losses = _image_losses(model, data)
    one_hot = np.eye(num_classes)[data.labels]
    summary = _Patients(
        loss=patient_means(losses, data.patients),
        reference_loss=None
        if reference is None
        else patient_means(_image_losses(reference, data), data.patients),
        mix=patient_means(one_hot, data.patients),
    )
    return summary, losses


def _concatenate(parts: list[_Patients]) -> _Patients:
    references = [part.reference_loss for part in parts]
    return _Patients(
        loss=np.concatenate([part.loss for part in parts]),
        reference_loss=None
        if any(r is None for r in references)
        else np.concatenate([r for r in references if r is not None]),
        mix=np.concatenate([part.mix for part in parts]),
    )


def _run_epsilon(run_dir: Path) -> tuple[float | None, str]:
    """The last round's epsilon (max over sites) and its unit from metrics.json, if any."""
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        return None, "none"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    epsilon, unit = None, "none"
    for row in metrics.get("sites", []):
        if isinstance(row, dict) and row.get(keys.EPSILON) is not None:
            epsilon = max(epsilon or 0.0, float(row[keys.EPSILON]))
            unit = str(row.get(keys.PRIVACY_UNIT, unit))
    return epsilon, unit


def _reference_model(job: FederationJob, reference: Path | None) -> _Model | None:
    """The calibrated attack's reference: ``reference``, else the job's initial weights."""
    if reference is not None:
        model_section = job.model.model_copy(
            update={"initial_weights": str(reference.expanduser().resolve())}
        )
        job = job.model_copy(update={"model": model_section})
    if not job.model.initial_weights:
        return None
    try:
        state = initial_state(job)
    except ConfigError as error:
        source = "--reference" if reference is not None else f"{JOB_FILE} model.initial_weights"
        raise ConfigError(source, error.reason) from None
    if state is None:  # not reached: initial_weights is set
        return None
    model = build_model(
        job.model, job.in_channels, job.num_classes, job.spatial_shape, job.privacy.enabled
    )
    model.load_state_dict(state)
    return _Model(model, job.model.initial_weights)


def _attacks(members: _Patients, non_members: _Patients) -> tuple[AttackResult, ...]:
    scores = {LOSS_ATTACK: (-members.loss, -non_members.loss)}
    if members.reference_loss is not None and non_members.reference_loss is not None:
        scores[CALIBRATED_ATTACK] = (
            members.reference_loss - members.loss,
            non_members.reference_loss - non_members.loss,
        )
    member_weights, non_member_weights = composition_weights(
        *composition_strata(members.mix, non_members.mix)
    )
    results = []
    for attack, (member_scores, non_member_scores) in scores.items():
        results.append(
            AttackResult(attack, ALL_PATIENTS, attack_figures(member_scores, non_member_scores))
        )
        if member_weights.any() and non_member_weights.any():
            matched = attack_figures(
                member_scores, non_member_scores, member_weights, non_member_weights
            )
            results.append(AttackResult(attack, COMPOSITION_MATCHED, matched))
    return tuple(results)


def _image_digests(data: ImageArrays) -> list[bytes]:
    return [
        hashlib.blake2b(np.ascontiguousarray(image).tobytes()).digest() for image in data.images
    ]


def _every_patient(splits: DatasetSplits) -> ImageArrays:
    """Train, validation and test patients of ``splits`` together (ids stay distinct)."""
    parts = [splits.train, splits.val, splits.test]
    if any(part.patients is None for part in parts):
        parts = [replace(part, patients=None) for part in parts]
    return ImageArrays.concatenate(parts)


def _given_non_members(path: Path, job: FederationJob, members: list[DatasetSplits]) -> ImageArrays:
    """Every patient of ``path``, refused (naming it) unless it can stand for non-members.

    Refused when it is prepared differently from the members (preprocessing contract, classes,
    image shape) or holds any image of a member's: then it is not data no site trained on.
    """
    source = str(path)
    splits = load_dataset(path, image_size=job.image_size, seed=job.seed)
    data = _every_patient(splits)
    first = members[0]
    if splits.class_names != first.class_names:
        raise ConfigError(
            source, f"classes {splits.class_names} differ from the run's {first.class_names}"
        )
    if data.images.shape[1:] != first.train.images.shape[1:]:
        raise ConfigError(
            source,
            f"images of shape {data.images.shape[1:]} differ from the members' "
            f"{first.train.images.shape[1:]}",
        )
    if first.preprocessing is not None:
        differences = first.preprocessing.differences(splits.preprocessing)
        if differences:
            raise ConfigError(source, "prepared unlike the members: " + "; ".join(differences[:3]))
    member_digests = {d for part in members for d in _image_digests(part.train)}
    shared = sum(digest in member_digests for digest in _image_digests(data))
    if shared:
        raise ConfigError(
            source,
            f"{shared} of its {len(data)} images are members' training images: non-members "
            "must be patients no site trained on",
        )
    if data.patients is None:
        logger.warning("%s does not know its patients: each image is one non-member", path)
    return data


def audit_run(
    run_dir: Path, reference: Path | None = None, non_members: Path | None = None
) -> AuditResult:
    """Attack ``run_dir``'s global model (a `medfed-sim run` folder) at the patient level.

    Args:
        run_dir: The run folder.
        reference: A checkpoint of the job's network that never saw the hospitals' patients,
            for the calibrated attack. Default: the job's initial weights; neither: the
            calibrated attack is not run.
        non_members: Data of patients no site trained on (a cache folder, several site caches
            or an .npz prepared like the run's data), every split of it. Default: the test
            split of the run's data.
    """
    for needed in (JOB_FILE, SETTINGS_FILE, CHECKPOINT_NAME):
        if not (run_dir / needed).is_file():
            raise ConfigError(str(run_dir), f"no {needed}: not a finished medfed-sim run folder")
    job = load_federation_job(run_dir / JOB_FILE)
    if job.task != "classification":
        raise ConfigError(str(run_dir), "the audit attacks classification models only")
    settings = SimulationSettings.model_validate_json(
        (run_dir / SETTINGS_FILE).read_text(encoding="utf-8")
    )
    size = job.spatial_shape
    network = build_model(job.model, job.in_channels, job.num_classes, size, job.privacy.enabled)
    network.load_state_dict(load_checkpoint(run_dir / CHECKPOINT_NAME)["state_dict"])
    model = _Model(network, str(run_dir / CHECKPOINT_NAME))
    reference_model = _reference_model(job, reference)
    reference_path = reference_model.source if reference_model is not None else None
    site_data = [
        load_dataset(site_file)
        for site_file in sorted((run_dir / "sites").glob(f"site-*/{SITE_DATA_FILE}"))
    ]
    if not site_data:
        raise ConfigError(str(run_dir), "no sites/site-*/data.npz: the members are unknown")
    if non_members is None:
        outside = load_dataset(settings.data, image_size=job.image_size, seed=job.seed).test
        source = f"test split of {settings.data}"
    else:
        outside = _given_non_members(non_members.expanduser().resolve(), job, site_data)
        source = f"every patient of {non_members.expanduser().resolve()}"
    member_parts, member_losses = [], []
    for site in site_data:
        part, losses = _patients(site.train, model, reference_model, job.num_classes)
        member_parts.append(part)
        member_losses.append(losses)
    non_member_patients, outside_losses = _patients(
        outside, model, reference_model, job.num_classes
    )
    members = _concatenate(member_parts)
    if len(non_member_patients.loss) < 2 or len(members.loss) < 2:
        raise ConfigError(str(run_dir), "too few patients on one side to audit")
    epsilon, unit = _run_epsilon(run_dir)
    logger.info("audited %s against reference %s", run_dir, reference_path)
    return AuditResult(
        run_dir=str(run_dir),
        dp=job.privacy.enabled,
        epsilon=epsilon if job.privacy.enabled else None,
        unit=unit if job.privacy.enabled else "none",
        members=len(members.loss),
        non_members=len(non_member_patients.loss),
        member_loss=float(np.concatenate(member_losses).mean()),
        non_member_loss=float(outside_losses.mean()),
        member_mix=tuple(float(share) for share in members.mix.mean(axis=0)),
        non_member_mix=tuple(float(share) for share in non_member_patients.mix.mean(axis=0)),
        reference=reference_path,
        non_member_source=source,
        attacks=_attacks(members, non_member_patients),
    )
