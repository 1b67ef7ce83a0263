"""Membership-inference audit of a simulated run's global model: a patient-level loss attack.

The attack (Yeom et al., "Privacy Risk in Machine Learning", CSF 2018, arXiv:1709.01604) guesses
that a patient was trained on when the model's loss on that patient's images is low. Members are
the patients of the simulated sites' training splits; non-members the patients of the held-out
test split, which no site trained on. The attack score of a patient is minus the mean
cross-entropy over their images; the audit reports the attack's ROC-AUC (0.5: no better than a
coin) and its true-positive rate at a 1% false-positive rate (Carlini et al., "Membership
Inference Attacks From First Principles", S&P 2022, arXiv:2112.03199).
"""

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from common import message_keys as keys
from common.checkpoint import load_checkpoint
from common.data.arrays import ImageArrays
from common.data.loading import load_dataset
from common.errors import ConfigError
from common.federation_job import load_federation_job
from common.models import build_model
from common.simulation_environment import SITE_DATA_FILE
from server.job_app import JOB_FILE
from server.server_app import CHECKPOINT_NAME
from simulations.runner import SETTINGS_FILE
from simulations.simulation_settings import SimulationSettings

__all__ = ["LOW_FPR", "AuditResult", "audit_run", "patient_scores"]

logger = logging.getLogger(__name__)

#: The false-positive rate the audit reports the true-positive rate at.
LOW_FPR = 0.01


@dataclass(frozen=True)
class AuditResult:
    """The attack's success on one run's global model, with what it was measured on."""

    run_dir: str
    dp: bool
    epsilon: float | None
    unit: str
    members: int
    non_members: int
    attack_auc: float
    tpr_at_1pct_fpr: float
    #: Mean loss of members and non-members (the generalisation gap the attack exploits).
    member_loss: float
    non_member_loss: float

    def to_dict(self) -> dict[str, object]:
        """Plain values for JSON."""
        return asdict(self)


@torch.no_grad()
def _image_losses(model: torch.nn.Module, data: ImageArrays, batch_size: int = 256) -> np.ndarray:
    model.eval()
    losses = []
    for start in range(0, len(data), batch_size):
        images = torch.from_numpy(data.images[start : start + batch_size])
        labels = torch.from_numpy(data.labels[start : start + batch_size])
        logits = model(images)
        losses.append(torch.nn.functional.cross_entropy(logits, labels, reduction="none"))
    return torch.cat(losses).numpy() if losses else np.zeros(0)


def patient_scores(losses: np.ndarray, patients: np.ndarray | None) -> np.ndarray:
    """Attack score per patient: minus the mean loss over the patient's images.

    Without patient ids every image is its own unit.
    """
    if patients is None:
        return -losses
    _, owner = np.unique(patients, return_inverse=True)
    totals = np.bincount(owner, weights=losses)
    return -(totals / np.bincount(owner))


def _tpr_at(labels: np.ndarray, scores: np.ndarray, fpr_limit: float) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= fpr_limit].max())


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


def audit_run(run_dir: Path) -> AuditResult:
    """Attack ``run_dir``'s global model (a `medfed-sim run` folder) at the patient level."""
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
    model = build_model(job.model, job.in_channels, job.num_classes, size, job.privacy.enabled)
    model.load_state_dict(load_checkpoint(run_dir / CHECKPOINT_NAME)["state_dict"])
    member_scores, member_losses = [], []
    for site_file in sorted((run_dir / "sites").glob(f"site-*/{SITE_DATA_FILE}")):
        train = load_dataset(site_file).train
        losses = _image_losses(model, train)
        member_losses.append(losses)
        member_scores.append(patient_scores(losses, train.patients))
    if not member_scores:
        raise ConfigError(str(run_dir), "no sites/site-*/data.npz: the members are unknown")
    test = load_dataset(settings.data, image_size=job.image_size, seed=job.seed).test
    test_losses = _image_losses(model, test)
    non_member = patient_scores(test_losses, test.patients)
    members = np.concatenate(member_scores)
    if len(non_member) < 2 or len(members) < 2:
        raise ConfigError(str(run_dir), "too few patients on one side to audit")
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(non_member))])
    scores = np.concatenate([members, non_member])
    epsilon, unit = _run_epsilon(run_dir)
    return AuditResult(
        run_dir=str(run_dir),
        dp=job.privacy.enabled,
        epsilon=epsilon if job.privacy.enabled else None,
        unit=unit if job.privacy.enabled else "none",
        members=len(members),
        non_members=len(non_member),
        attack_auc=float(roc_auc_score(labels, scores)),
        tpr_at_1pct_fpr=_tpr_at(labels, scores, LOW_FPR),
        member_loss=float(np.concatenate(member_losses).mean()),
        non_member_loss=float(test_losses.mean()),
    )
