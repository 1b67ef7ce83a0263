"""The vectorised RDP of the Sampled Gaussian Mechanism against Opacus' own loops."""

import numpy as np
import pytest
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp

from common.config import PrivacyConfig
from common.privacy import PrivacyState, SitePrivacyEngine
from common.privacy.accounting import RDP_ORDERS
from common.privacy.sampled_gaussian_rdp import rdp_epsilon, sampled_gaussian_rdp

ORDERS = [*RDP_ORDERS, float("inf")]


@pytest.mark.parametrize(
    ("sample_rate", "noise"),
    [(1 / 148, 0.5228), (0.001, 0.4), (0.01, 1.0), (1 / 6, 1.3), (0.5, 3.0), (0.9, 0.8)],
)
def test_rdp_is_opacus_rdp_at_every_order(sample_rate, noise):
    """Integer orders (2..256) and fractional ones (1.1..10.9), small and large rates."""
    theirs = compute_rdp(q=sample_rate, noise_multiplier=noise, steps=7, orders=ORDERS)
    ours = sampled_gaussian_rdp(sample_rate, noise, 7, ORDERS)
    assert np.array_equal(np.isfinite(ours), np.isfinite(theirs))
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-8)


@pytest.mark.parametrize(("sample_rate", "noise"), [(0.0, 1.0), (1.0, 1.0), (0.1, 0.0)])
def test_edge_rates_and_noise_are_opacus_edge_cases(sample_rate, noise):
    theirs = compute_rdp(q=sample_rate, noise_multiplier=noise, steps=3, orders=ORDERS)
    assert np.array_equal(sampled_gaussian_rdp(sample_rate, noise, 3, ORDERS), theirs)


def test_a_site_reports_opacus_epsilon():
    """A job's history over rounds (two noise levels): the epsilon Opacus' accountant gives."""
    history = [(0.5228, 1 / 148, 148 * 3), (0.6, 1 / 148, 148)]
    accountant = RDPAccountant()
    accountant.history = list(history)
    theirs = accountant.get_epsilon(delta=1e-5, alphas=RDP_ORDERS)
    assert rdp_epsilon(history, 1e-5, RDP_ORDERS) == pytest.approx(theirs, rel=1e-10)
    state = PrivacyState(noise_multiplier=0.5228, sample_rate=1 / 148, history=history)
    site = SitePrivacyEngine(PrivacyConfig(), 4708, 32, planned_epochs=4, state=state)
    assert site.epsilon() == pytest.approx(theirs, rel=1e-10)
    assert rdp_epsilon([], 1e-5, RDP_ORDERS) == 0.0
