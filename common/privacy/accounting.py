"""The accountant state a site keeps between rounds, and the noise calibrated for a whole job.

RDP accounting: Mironov, "Rényi Differential Privacy", CSF 2017 (arXiv:1702.07476).
"""

import functools
import json
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import opacus
from opacus.accountants import RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as opacus_rdp
from opacus.accountants.utils import MAX_SIGMA, get_noise_multiplier

from common.config import PrivacyConfig
from common.errors import ConfigError
from common.privacy import calibration_cache

__all__ = [
    "EPSILON_TOLERANCE",
    "RDP_ORDERS",
    "PrivacyState",
    "PrivacyUnit",
    "calibrate_noise_multiplier",
    "conversion_options",
    "epsilon_of",
    "rdp_epsilon",
]

#: What one epsilon protects: one patient (all its images) or one image.
PrivacyUnit = Literal["patient", "image"]

#: RDP orders searched when converting to (epsilon, delta): Opacus' defaults stop at 63, which
#: leaves the bound loose (and warns) for small sites at epsilon >= 8; larger orders tighten it.
RDP_ORDERS: list[float] = [*RDPAccountant.DEFAULT_ALPHAS, *range(64, 257)]

#: How Opacus' noise search says that no noise up to its MAX_SIGMA reaches the target.
_BUDGET_TOO_LOW = "The privacy budget is too low"

#: Opacus' default precision of its noise search: the job spends between target - this and target.
EPSILON_TOLERANCE = 0.01


def conversion_options(config: PrivacyConfig) -> dict[str, Any]:
    """Keyword arguments of Opacus' epsilon conversion for the configured accountant."""
    return {"alphas": RDP_ORDERS} if config.accountant == "rdp" else {}


@dataclass
class PrivacyState:
    """What a site's accountant must remember between rounds."""

    noise_multiplier: float
    #: Poisson sampling rate of the privacy unit: images, or patients.
    sample_rate: float
    #: Opacus accountant history: (noise multiplier, sample rate, steps) per accounting event.
    history: list[tuple[float, float, int]] = field(default_factory=list)
    #: The unit epsilon is counted in; states saved before units existed were per image.
    unit: PrivacyUnit = "image"

    def to_json(self) -> str:
        """Serialise for Flower's context.state or a file."""
        return json.dumps(
            {
                "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate,
                "history": [list(entry) for entry in self.history],
                "unit": self.unit,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "PrivacyState":
        """Inverse of :meth:`to_json`."""
        raw = json.loads(text)
        unit = raw.get("unit", "image")
        if unit not in ("patient", "image"):
            raise ValueError(f"privacy state unit {unit!r} is not 'patient' or 'image'")
        return cls(
            noise_multiplier=float(raw["noise_multiplier"]),
            sample_rate=float(raw["sample_rate"]),
            history=[(float(n), float(q), int(s)) for n, q, s in raw["history"]],
            unit=unit,
        )


@functools.lru_cache(maxsize=64)
def calibrate_noise_multiplier(
    config: PrivacyConfig,
    sample_rate: float,
    total_epochs: int | None = None,
    *,
    steps: int | None = None,
) -> float:
    """Noise multiplier that spends exactly the target epsilon over the job (Opacus' search).

    The job is ``total_epochs`` epochs of 1 / ``sample_rate`` steps (Opacus' loader), or
    exactly ``steps`` steps. The search takes about 2 s of CPU: its result is kept per process
    and on disk (:mod:`common.privacy.calibration_cache`); a kept value is used only after the
    accountant confirms it spends between target - :data:`EPSILON_TOLERANCE` and the target.
    """
    if (steps is None) == (total_epochs is None):
        raise ValueError("calibrate the noise for a number of epochs or of steps, not both")
    if total_epochs is not None:
        steps = int(total_epochs / sample_rate)  # as Opacus counts an epoch's steps
    assert steps is not None  # one of the two was given
    key = {
        "opacus": opacus.__version__,
        "accountant": config.accountant,
        "target_epsilon": config.target_epsilon,
        "target_delta": config.target_delta,
        "sample_rate": sample_rate,
        "steps": steps,
        "epsilon_tolerance": EPSILON_TOLERANCE,
        "options": conversion_options(config),
    }
    kept = calibration_cache.load(key)
    if kept is not None:
        spent = epsilon_of(config, [(kept, sample_rate, steps)])
        if config.target_epsilon - EPSILON_TOLERANCE <= spent <= config.target_epsilon:
            return kept
    floor = rdp_epsilon_floor(config.target_delta) if config.accountant == "rdp" else 0.0
    if config.target_epsilon <= floor:  # refused at once: Opacus' search takes seconds to fail
        raise _unreachable(config, f"{floor:.3g}, whatever the noise")
    try:
        noise_multiplier = float(
            get_noise_multiplier(
                target_epsilon=config.target_epsilon,
                target_delta=config.target_delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=config.accountant,
                epsilon_tolerance=EPSILON_TOLERANCE,
                **conversion_options(config),
            )
        )
    except ValueError as error:
        if not str(error).startswith(_BUDGET_TOO_LOW):
            raise
        raise _unreachable(
            config, f"what {steps} steps at sample rate {sample_rate:.3g} spend with noise "
            f"{MAX_SIGMA:g} times the clipping norm (Opacus' largest)",
        ) from error  # fmt: skip
    calibration_cache.store(key, noise_multiplier)
    return noise_multiplier


def _unreachable(config: PrivacyConfig, floor: str) -> ConfigError:
    return ConfigError(
        "privacy.target_epsilon",
        f"{config.target_epsilon:g} cannot be reached at delta {config.target_delta:g}: the "
        f"{config.accountant} accountant certifies no less than {floor}; give a larger "
        "target_epsilon",
    )


def rdp_epsilon_floor(delta: float) -> float:
    """The least epsilon the RDP accountant certifies at ``delta``, however large the noise.

    Opacus' conversion of zero RDP at :data:`RDP_ORDERS` (about 0.019 at delta 1e-5): every
    history converts to more.
    """
    with warnings.catch_warnings():  # Opacus: "optimal order is the largest alpha", as it is
        warnings.simplefilter("ignore", UserWarning)
        zero = np.zeros(len(RDP_ORDERS))
        epsilon, _ = opacus_rdp.get_privacy_spent(orders=RDP_ORDERS, rdp=zero, delta=delta)
    return float(epsilon)


@functools.lru_cache(maxsize=1024)  # 2.8 kB each: a simulation process serves many sites
def _rdp_of_one_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """Opacus' RDP of one step of the Sampled Gaussian Mechanism at RDP_ORDERS (read-only).

    The costly part of an epsilon report (about 0.09 s CPU for 344 orders): one site composes
    the same (noise, rate) pair every step of every round, so it is computed once per process.
    """
    rdp = np.asarray(
        opacus_rdp.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=RDP_ORDERS
        )
    )
    rdp.setflags(write=False)
    return rdp


def rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon at ``delta`` of an RDP accountant ``history`` (noise, rate, steps), Opacus' own.

    The value of Opacus' ``RDPAccountant(history).get_epsilon(delta, alphas=RDP_ORDERS)``, bit
    for bit: its ``compute_rdp(q, sigma, steps)`` is the per-step RDP times ``steps`` (RDP
    composes linearly), here with the per-step RDP from the same Opacus function, memoised per
    (noise, rate), summed in the same order and converted by Opacus' ``get_privacy_spent``.
    """
    if not history:
        return 0.0
    rdp = sum([_rdp_of_one_step(float(n), float(q)) * steps for n, q, steps in history])
    epsilon, _ = opacus_rdp.get_privacy_spent(orders=RDP_ORDERS, rdp=rdp, delta=delta)
    return float(epsilon)


def epsilon_of(config: PrivacyConfig, history: list[tuple[float, float, int]]) -> float:
    """Epsilon at the configured delta of an accountant history, by the configured accountant.

    RDP through :func:`rdp_epsilon` (Opacus' value, the per-step RDP memoised); any other
    accountant through Opacus' accountant itself.
    """
    if not history:
        return 0.0
    if config.accountant == "rdp":
        return rdp_epsilon(history, config.target_delta)
    accountant = create_accountant(config.accountant)
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta=config.target_delta, **conversion_options(config)))
