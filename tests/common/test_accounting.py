"""The epsilon a site reports is Opacus' own, whatever the per-step RDP memo spares."""

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from common.config import PrivacyConfig
from common.errors import ConfigError
from common.privacy import accounting
from common.privacy.accounting import (
    RDP_ORDERS,
    calibrate_noise_multiplier,
    epsilon_of,
    rdp_epsilon,
    rdp_epsilon_floor,
)

HISTORIES = [
    [(0.5228, 1 / 148, 1)],
    [(0.5228, 1 / 148, 148)],
    [(0.5228, 1 / 148, 148 * 25)],  # a whole job of the default CNN at batch 32
    [(1.1, 0.01, 700), (0.8, 0.05, 30)],  # two jobs (the ledger composes across jobs)
    [(0.8, 0.05, 30), (1.1, 0.01, 700), (0.8, 0.05, 12)],
    [(2.0, 1.0, 5)],  # full-batch steps
    [(0.3, 0.2, 50)],  # little noise: the optimal order is the largest
]


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
@pytest.mark.parametrize("history", HISTORIES)
@pytest.mark.parametrize("delta", [1e-5, 1e-3])
def test_rdp_epsilon_is_opacus_rdp_accountant_bit_for_bit(history, delta):
    accountant = RDPAccountant()
    accountant.history = list(history)
    expected = accountant.get_epsilon(delta=delta, alphas=RDP_ORDERS)
    assert rdp_epsilon(history, delta) == expected  # equal, not approximately
    assert rdp_epsilon(history, delta) == expected  # again, from the memo


def test_one_pair_is_computed_once_whatever_the_steps():
    """A site composes one (noise, rate) pair every round: its RDP is computed once."""
    pair = (0.731, 1 / 97)
    before = accounting._rdp_of_one_step.cache_info()
    epsilons = [rdp_epsilon([(*pair, 97 * rounds)], 1e-5) for rounds in range(1, 6)]
    after = accounting._rdp_of_one_step.cache_info()
    assert after.misses - before.misses == 1 and after.hits - before.hits == 4
    assert epsilons == sorted(epsilons) and len(set(epsilons)) == 5
    with pytest.raises(ValueError, match="read-only"):
        accounting._rdp_of_one_step(*pair)[0] = 0.0  # nobody can corrupt the memo


def test_epsilon_of_follows_the_configured_accountant():
    history = [(1.0, 0.02, 200)]
    rdp = RDPAccountant()
    rdp.history = list(history)
    prv = PRVAccountant()
    prv.history = list(history)
    config = PrivacyConfig(target_delta=1e-5)
    assert epsilon_of(config, history) == rdp.get_epsilon(delta=1e-5, alphas=RDP_ORDERS)
    prv_config = config.model_copy(update={"accountant": "prv"})
    assert epsilon_of(prv_config, history) == pytest.approx(prv.get_epsilon(delta=1e-5))
    assert epsilon_of(prv_config, []) == epsilon_of(config, []) == 0.0


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_an_epsilon_no_noise_reaches_is_a_config_error_naming_the_key():
    config = PrivacyConfig(target_epsilon=0.0001)
    with pytest.raises(ConfigError, match=r"privacy.target_epsilon: 0.0001 cannot be reached"):
        calibrate_noise_multiplier(config, sample_rate=0.01, total_epochs=2)
    floor = rdp_epsilon_floor(config.target_delta)
    assert floor == pytest.approx(epsilon_of(config, [(1e6, 0.01, 200)]), abs=1e-6)
    # a target above the floor is reached
    reachable = PrivacyConfig(target_epsilon=0.05)
    noise = calibrate_noise_multiplier(reachable, sample_rate=0.01, total_epochs=2)
    assert epsilon_of(reachable, [(noise, 0.01, 200)]) <= 0.05
