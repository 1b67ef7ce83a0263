"""RDP of the Sampled Gaussian Mechanism at many orders at once, and the epsilon it gives.

The formulas of Mironov, Talwar and Zhang, "Rényi Differential Privacy of the Sampled Gaussian
Mechanism", 2019 (arXiv:1908.10530), Section 3.3, as Opacus' ``privacy_analysis.compute_rdp``
evaluates them, with the sum over each order's terms done as one numpy array operation instead
of a Python loop per term: Opacus needs about 0.1 s of CPU for the 344 orders
common.privacy.accounting searches, paid at the end of every DP round (more than a tenth of a
plain epoch of the default CNN); this needs about a millisecond. The result equals Opacus' up to
float rounding (tests/common/test_sampled_gaussian_rdp.py); the conversion to (epsilon, delta)
is Opacus' own.
"""

import math

import numpy as np
from opacus.accountants.analysis.rdp import get_privacy_spent
from scipy import special

__all__ = ["rdp_epsilon", "sampled_gaussian_rdp"]

#: Opacus stops a fractional order's series at the first term below exp(-30).
_LAST_LOG_TERM = -30.0

#: Terms of a fractional order's series evaluated per array operation.
_CHUNK = 256


def _log_sum_signed(log_terms: np.ndarray, signs: np.ndarray) -> float:
    """log(sum_i sign_i exp(log_terms_i)), the sum taken after shifting by the largest term."""
    top = float(np.max(log_terms))
    if top == -np.inf:
        return -np.inf
    total = float(np.sum(signs * np.exp(log_terms - top)))
    return math.log(total) + top if total > 0 else -np.inf


def _log_a_int(q: float, sigma: float, alphas: np.ndarray) -> np.ndarray:
    """Log A_alpha for integer orders: binomial sums of alpha + 1 positive terms, all at once."""
    i = np.arange(int(alphas.max()) + 1, dtype=np.float64)[None, :]
    alpha = alphas[:, None]
    with np.errstate(divide="ignore"):  # binom(alpha, i > alpha) = 0: a term of -inf
        log_terms = (
            np.log(special.binom(alpha, i))
            + i * math.log(q)
            + (alpha - i) * math.log(1 - q)
            + (i * i - i) / (2 * sigma**2)
        )
    return special.logsumexp(np.where(i <= alpha, log_terms, -np.inf), axis=1)


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    """Log A_alpha for a fractional order: two series, summed until a term is below e^-30."""
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    parts0, parts1, signs = [], [], []
    start = 0
    while True:
        i = np.arange(start, start + _CHUNK, dtype=np.float64)
        coef = special.binom(alpha, i)
        log_coef = np.log(np.abs(coef))
        j = alpha - i
        log_t0 = log_coef + i * math.log(q) + j * math.log(1 - q)
        log_t1 = log_coef + j * math.log(q) + i * math.log(1 - q)
        # log(erfc(x) / 2) = log_ndtr(-sqrt(2) x), x = (i - z0) / (sqrt(2) sigma) and (z0 - j) / ...
        log_e0 = special.log_ndtr((z0 - i) / sigma)
        log_e1 = special.log_ndtr((j - z0) / sigma)
        log_s0 = log_t0 + (i * i - i) / (2 * sigma**2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma**2) + log_e1
        below = np.nonzero(np.maximum(log_s0, log_s1) < _LAST_LOG_TERM)[0]
        end = int(below[0]) + 1 if len(below) else _CHUNK
        parts0.append(log_s0[:end])
        parts1.append(log_s1[:end])
        signs.append(np.where(coef[:end] > 0, 1.0, -1.0))
        if len(below):
            break
        start += _CHUNK
    sign = np.concatenate(signs)
    log_a0 = _log_sum_signed(np.concatenate(parts0), sign)
    log_a1 = _log_sum_signed(np.concatenate(parts1), sign)
    return float(np.logaddexp(log_a0, log_a1))


def sampled_gaussian_rdp(
    sample_rate: float, noise_multiplier: float, steps: int, orders: list[float]
) -> np.ndarray:
    """RDP at each of ``orders`` of ``steps`` steps of the Sampled Gaussian Mechanism."""
    q, sigma = sample_rate, noise_multiplier
    alphas = np.asarray(orders, dtype=np.float64)
    if q == 0:
        return np.zeros(len(alphas))
    if sigma == 0:
        return np.full(len(alphas), np.inf)
    if q == 1.0:
        return alphas / (2 * sigma**2) * steps
    rdp = np.full(len(alphas), np.inf)
    finite = np.isfinite(alphas)
    integer = finite & (alphas == np.floor(alphas))
    if integer.any():
        rdp[integer] = _log_a_int(q, sigma, alphas[integer]) / (alphas[integer] - 1)
    for index in np.nonzero(finite & ~integer)[0]:
        rdp[index] = _log_a_frac(q, sigma, float(alphas[index])) / (alphas[index] - 1)
    return rdp * steps


def rdp_epsilon(
    history: list[tuple[float, float, int]], delta: float, orders: list[float]
) -> float:
    """Epsilon at ``delta`` of an Opacus RDP accountant's history, best over ``orders``.

    ``history`` holds (noise multiplier, sample rate, steps) entries, as Opacus'
    ``RDPAccountant.history``; the same result as its ``get_epsilon(delta, alphas=orders)``.
    """
    if not history:
        return 0.0
    rdp = sum(sampled_gaussian_rdp(rate, noise, steps, orders) for noise, rate, steps in history)
    epsilon, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(epsilon)
