"""Attack statistics: Hanley-McNeil error, composition weights that neutralise class mix."""

import math

import numpy as np
import pytest
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from simulations.membership_statistics import (
    attack_figures,
    composition_strata,
    composition_weights,
    hanley_mcneil_standard_error,
)


def test_the_standard_error_at_chance_is_the_exact_mann_whitney_one() -> None:
    for members, non_members in [(10, 10), (315, 90), (33, 9)]:
        exact = math.sqrt((members + non_members + 1) / (12 * members * non_members))
        assert hanley_mcneil_standard_error(0.5, members, non_members) == pytest.approx(exact)


def test_the_standard_error_matches_the_spread_of_simulated_aucs() -> None:
    """Binormal scores with true AUC 0.8: the AUC's spread over 2000 audits of 50 / 40."""
    rng = np.random.default_rng(0)
    shift = math.sqrt(2) * norm.ppf(0.8)
    members = rng.normal(shift, 1.0, (2000, 50))
    non_members = rng.normal(0.0, 1.0, (2000, 40))
    ranks = rankdata(np.concatenate([members, non_members], axis=1), axis=1)[:, :50]
    aucs = (ranks.sum(axis=1) - 50 * 51 / 2) / (50 * 40)
    assert aucs.mean() == pytest.approx(0.8, abs=0.01)
    assert hanley_mcneil_standard_error(0.8, 50, 40) == pytest.approx(aucs.std(), rel=0.1)


def test_unweighted_figures_are_sklearns_auc_and_count_everyone() -> None:
    rng = np.random.default_rng(1)
    members, non_members = rng.normal(0.5, 1, 30), rng.normal(0, 1, 20)
    figures = attack_figures(members, non_members)
    labels = np.r_[np.ones(30), np.zeros(20)]
    assert figures.auc == pytest.approx(roc_auc_score(labels, np.r_[members, non_members]))
    assert (figures.members, figures.non_members, figures.effective_non_members) == (30, 20, 20)
    assert figures.standard_error == pytest.approx(
        hanley_mcneil_standard_error(figures.auc, 30, 20)
    )
    separated = attack_figures(np.arange(10.0) + 100, -np.arange(300.0))
    assert separated.auc == 1.0 and separated.tpr_at_low_fpr == 1.0


def test_matching_makes_a_score_of_the_class_mix_alone_score_chance() -> None:
    """Members mostly lesion-free, non-members mostly not: a score that only sees the mix."""
    rng = np.random.default_rng(2)
    member_share = rng.binomial(6, 0.2, 300) / 6
    non_member_share = rng.binomial(6, 0.6, 100) / 6
    non_member_share = non_member_share[non_member_share > 0]  # no lesion-free non-member
    member_mix = np.stack([1 - member_share, member_share], axis=1)
    non_member_mix = np.stack([1 - non_member_share, non_member_share], axis=1)
    strata = composition_strata(member_mix, non_member_mix)
    member_weights, non_member_weights = composition_weights(*strata)
    score = {0: 3.0, 1: 1.0, 2: 2.0, 3: 0.5, 4: -1.0, 5: 5.0, 6: 0.0}  # any function of the mix
    member_scores = np.array([score[round(s * 6)] for s in member_share])
    non_member_scores = np.array([score[round(s * 6)] for s in non_member_share])
    plain = attack_figures(member_scores, non_member_scores)
    matched = attack_figures(member_scores, non_member_scores, member_weights, non_member_weights)
    assert abs(plain.auc - 0.5) > 0.15
    assert matched.auc == pytest.approx(0.5, abs=1e-9)
    # members whose mix no non-member has are left out, and not counted
    kept = np.isin(strata[0], strata[1])
    assert matched.members == kept.sum() == (member_share > 0).sum() < 300
    compared = np.isin(strata[1], strata[0]).sum()  # nor are non-members whose mix no member has
    assert matched.effective_non_members < matched.non_members == compared < len(non_member_share)


def test_weights_give_the_non_members_the_kept_members_mix() -> None:
    member_strata, non_member_strata = np.array([0, 0, 0, 1, 2]), np.array([0, 1, 1, 1, 3])
    member_weights, non_member_weights = composition_weights(member_strata, non_member_strata)
    assert member_weights.tolist() == [1, 1, 1, 1, 0]  # nobody in stratum 2 to compare with
    assert non_member_weights[4] == 0  # no member in stratum 3
    share = np.bincount(non_member_strata, weights=non_member_weights) / non_member_weights.sum()
    assert share[:2] == pytest.approx([0.75, 0.25])
