"""How well a membership-inference score separates members: ROC-AUC, its error, TPR at low FPR.

Members are the positives. Non-members may carry weights (composition matching reweights them
to the members' class mix, :func:`composition_weights`), so that a model which never saw the
members, but whose loss depends on a patient's classes, scores about 0.5 even when the members
and non-members differ in class mix.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = [
    "COMPOSITION_BINS",
    "LOW_FPR",
    "AttackFigures",
    "attack_figures",
    "composition_strata",
    "composition_weights",
    "hanley_mcneil_standard_error",
]

#: The false-positive rate the audit reports the true-positive rate at.
LOW_FPR = 0.01

#: A patient's class mix (share of their images in each class) is rounded to multiples of
#: 1 / COMPOSITION_BINS to form strata: exact for the default demo's 6 slices per patient.
COMPOSITION_BINS = 6


@dataclass(frozen=True)
class AttackFigures:
    """One attack score's success, with the counts it was measured on."""

    auc: float
    #: Hanley and McNeil's standard error of ``auc`` at these counts (effective counts if weighted).
    standard_error: float
    tpr_at_low_fpr: float
    #: Members and non-members compared (a member whose class mix no non-member has is not).
    members: int
    non_members: int
    #: Kish's effective number of non-members, (sum w)^2 / sum w^2: their count if unweighted.
    effective_non_members: float

    def to_dict(self) -> dict[str, object]:
        """Plain values for JSON."""
        return asdict(self)


def hanley_mcneil_standard_error(auc: float, positives: float, negatives: float) -> float:
    """Standard error of an ROC-AUC measured on ``positives`` and ``negatives`` examples.

    Hanley and McNeil, "The meaning and use of the area under a receiver operating
    characteristic (ROC) curve", Radiology 143(1), 1982, eq. 2 with its exponential
    approximations Q1 = A / (2 - A), Q2 = 2 A^2 / (1 + A). At A = 0.5 it is the exact standard
    deviation of the Mann-Whitney AUC of two samples from one distribution.
    """
    if positives < 1 or negatives < 1:
        raise ValueError(f"need at least one of each: {positives} positives, {negatives} negatives")
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc**2 / (1.0 + auc)
    variance = (
        auc * (1.0 - auc) + (positives - 1.0) * (q1 - auc**2) + (negatives - 1.0) * (q2 - auc**2)
    ) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


def _kish(weights: np.ndarray) -> float:
    return float(weights.sum() ** 2 / (weights**2).sum())


def attack_figures(
    member_scores: np.ndarray,
    non_member_scores: np.ndarray,
    member_weights: np.ndarray | None = None,
    non_member_weights: np.ndarray | None = None,
    low_fpr: float = LOW_FPR,
) -> AttackFigures:
    """ROC-AUC, its standard error and TPR at ``low_fpr`` of scores where higher means member.

    Weights (e.g. :func:`composition_weights`) weigh each example in the ROC curve; an example
    of weight 0 is left out and not counted.

    Raises:
        ValueError: when fewer than one member or non-member keeps a positive weight.
    """
    member_weights = np.ones(len(member_scores)) if member_weights is None else member_weights
    non_member_weights = (
        np.ones(len(non_member_scores)) if non_member_weights is None else non_member_weights
    )
    members, non_members = member_weights > 0, non_member_weights > 0
    if not members.any() or not non_members.any():
        raise ValueError(f"{members.sum()} members and {non_members.sum()} non-members to compare")
    scores = np.concatenate([member_scores[members], non_member_scores[non_members]])
    labels = np.concatenate([np.ones(members.sum()), np.zeros(non_members.sum())])
    weights = np.concatenate([member_weights[members], non_member_weights[non_members]])
    auc = float(roc_auc_score(labels, scores, sample_weight=weights))
    fpr, tpr, _ = roc_curve(labels, scores, sample_weight=weights)
    effective_members = _kish(member_weights[members])
    effective_non_members = _kish(non_member_weights[non_members])
    return AttackFigures(
        auc=auc,
        standard_error=hanley_mcneil_standard_error(auc, effective_members, effective_non_members),
        tpr_at_low_fpr=float(tpr[fpr <= low_fpr].max()),
        members=int(members.sum()),
        non_members=int(non_members.sum()),
        effective_non_members=effective_non_members,
    )


def composition_strata(
    member_mix: np.ndarray, non_member_mix: np.ndarray, bins: int = COMPOSITION_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """Stratum ids of members and non-members from their class mix ([patients, classes] shares).

    Two patients share a stratum when each class's share of their images rounds to the same
    multiple of ``1 / bins``.
    """
    rounded = np.rint(np.concatenate([member_mix, non_member_mix]) * bins).astype(np.int64)
    _, strata = np.unique(rounded, axis=0, return_inverse=True)
    strata = strata.reshape(-1)
    return strata[: len(member_mix)], strata[len(member_mix) :]


def composition_weights(
    member_strata: np.ndarray, non_member_strata: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weights that give the non-members the members' mix of strata.

    A member keeps weight 1 when some non-member shares its stratum, else 0 (nothing to compare
    it with). A non-member in stratum s weighs (kept members' share of s) / (non-members' share
    of s), so the weighted non-members have the kept members' composition; a non-member whose
    stratum has no member weighs 0. A score that depends on the stratum only then has an
    expected weighted ROC-AUC of 0.5 (reweighting to a reference population: the
    ratio-of-densities weights of covariate-shift correction, Shimodaira 2000).
    """
    size = int(max(member_strata.max(initial=-1), non_member_strata.max(initial=-1))) + 1
    non_member_counts = np.bincount(non_member_strata, minlength=size)
    member_weights = (non_member_counts[member_strata] > 0).astype(np.float64)
    kept_counts = np.bincount(member_strata, weights=member_weights, minlength=size)
    kept = kept_counts.sum()
    if kept == 0:
        return member_weights, np.zeros(len(non_member_strata))
    ratio = (kept_counts / kept) / np.maximum(non_member_counts / len(non_member_strata), 1e-300)
    return member_weights, ratio[non_member_strata]
