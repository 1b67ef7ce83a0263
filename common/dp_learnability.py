"""Whether a site's DP-SGD settings leave it anything to learn, said before training starts.

DP-SGD (Abadi et al. 2016, arXiv:1607.00133) adds Gaussian noise of standard deviation
``noise_multiplier x C`` per coordinate to the sum of a step's clipped gradients (each at most
``C`` long) and divides by the expected batch. Over ``d`` trained parameters the noise on the
averaged gradient has norm about ``noise_multiplier x sqrt(d) / expected_batch`` clipping
norms, against a signal of at most one: when that is large, every step is mostly noise, and
training fewer parameters (``train.trainable``) shrinks it. In docs/results.md, with the CNN's
48,738 parameters at epsilon 8: PneumoniaMNIST's site of 195 images (0.049 clipping norms per
coordinate, 10.8 in norm) alone never predicted pneumonia (recall 0), the larger sites (0.024,
5.4) reached ROC-AUC 0.92; generated brain MRI at 11 patients a step (20 with all 46,818
parameters) reached 0.66, while training only the 130-parameter head at the same noise (1.1)
kept its AUC. So medfed warns above :data:`NOISE_NORM_LIMIT`, a rule of thumb rather than a
bound. The remedy is a larger expected batch (the noise multiplier grows far slower than the
batch), more data per site, fewer trained parameters or a larger epsilon. More rounds do not
help at a fixed epsilon: the noise is calibrated for every step of the job.
"""

import logging
import math
import warnings
from dataclasses import dataclass

from common.config import PrivacyConfig
from common.data.arrays import ImageArrays
from common.errors import ConfigError
from common.privacy.accounting import PrivacyUnit
from common.privacy.planning import RoundPlan, plan_round

__all__ = [
    "MIN_EXPECTED_BATCH",
    "NOISE_NORM_LIMIT",
    "DpOutlook",
    "dp_outlook",
    "learnability_warning",
    "unplannable_warning",
]

logger = logging.getLogger(__name__)

#: Norm of the noise on one step's averaged gradient, in clipping norms, above which a site
#: learns little: 0.04 per coordinate at the 48,738 parameters it was observed with.
NOISE_NORM_LIMIT = 8.8
#: Expected units (images or patients) per step below which a step's average means little.
MIN_EXPECTED_BATCH = 8.0


@dataclass(frozen=True)
class DpOutlook:
    """One site's DP-SGD round as it will run: units, expected batch, steps, noise, parameters."""

    unit: str
    units: int
    expected_batch: float
    steps_per_round: int
    noise_multiplier: float
    parameters: int

    @classmethod
    def of(cls, plan: RoundPlan, parameters: int) -> "DpOutlook":
        """The outlook of a round already planned (no second calibration)."""
        units = plan.units
        return cls(
            plan.unit, units, plan.sample_rate * units, plan.steps, plan.noise_multiplier,
            parameters,
        )  # fmt: skip

    @property
    def noise_norm(self) -> float:
        """Norm of the noise on a step's averaged gradient, in clipping norms.

        The standard deviation per coordinate times the square root of the trained parameters.
        """
        return self.noise_multiplier * math.sqrt(self.parameters) / max(self.expected_batch, 1e-12)

    @property
    def too_small(self) -> bool:
        """True when the noise swamps each step or a step averages too few units."""
        return self.noise_norm > NOISE_NORM_LIMIT or self.expected_batch < MIN_EXPECTED_BATCH

    def describe(self) -> str:
        """The figures, as a warning states them."""
        return (
            f"{self.units} {self.unit}s, expected batch {self.expected_batch:.1f} {self.unit}s, "
            f"{self.steps_per_round} step{'s' if self.steps_per_round != 1 else ''} a round, "
            f"noise multiplier {self.noise_multiplier:.2f}, {self.parameters:,} trained "
            f"parameters: the noise on each averaged step is {self.noise_norm:.1f} x the "
            f"clipping norm (above {NOISE_NORM_LIMIT} a site learns little)"
        )


def dp_outlook(
    privacy: PrivacyConfig,
    data: ImageArrays,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    parameters: int,
) -> DpOutlook:
    """The first round of DP-SGD on ``data`` (the samples a round trains on), before it runs.

    ``parameters`` is the number the job trains (:func:`common.job_model.trained_parameters`).

    Per patient where the data knows its patients and the job does not ask for images
    (as :func:`common.privacy.unit.privacy_unit` decides), else per image.

    Raises:
        ConfigError: the site has too few patients for one expected step (as training would).
    """
    patients = privacy.unit != "image" and data.patients is not None
    unit: PrivacyUnit = "patient" if patients else "image"
    with warnings.catch_warnings():
        # Opacus' RDP conversion warns when the best order is its largest; the calibration
        # this plans is the one training runs (and says nothing new to a user)
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        plan = plan_round(privacy, data, batch_size, local_epochs, rounds, None, unit)
    return DpOutlook.of(plan, parameters)


def unplannable_warning(site: str, error: ConfigError) -> str:
    """The warning for a site whose DP-SGD round cannot be planned at all."""
    return f"site {site} cannot run DP-SGD: {error}"


def learnability_warning(
    site: str,
    privacy: PrivacyConfig,
    data: ImageArrays,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    parameters: int,
    advice: str = "",
    plan: RoundPlan | None = None,
) -> str | None:
    """A warning naming ``site``'s figures and what would help, or None when it can learn.

    ``advice`` is appended to the generic remedies (e.g. a simulation's "fewer --sites").
    ``plan`` is the first round's plan when the caller made it already (a site does, for its
    ledger and training): its noise is then not calibrated again. Only the figure quoted for a
    doubled batch, a plan of its own, is calibrated here, and only when the warning is given.
    """
    if plan is not None:
        outlook = DpOutlook.of(plan, parameters)
    else:
        try:
            outlook = dp_outlook(privacy, data, batch_size, local_epochs, rounds, parameters)
        except ConfigError as exc:
            return unplannable_warning(site, exc)
    if not outlook.too_small:
        return None
    larger = min(2 * batch_size, len(data))
    helps = [f"a larger batch size than {batch_size}"]
    if larger > batch_size:
        try:
            doubled = dp_outlook(privacy, data, larger, local_epochs, rounds, parameters)
            helps[0] += f" (at {larger}: {doubled.noise_norm:.1f})"
        except ConfigError:  # too few patients for that batch: no figure to give
            pass
    helps += [
        "more data per site",
        "training fewer parameters (train.trainable)",
        f"a larger epsilon than {privacy.target_epsilon:g}",
    ]
    if advice:
        helps.append(advice)
    return (
        f"site {site} is small for its DP settings: {outlook.describe()}. What would help: "
        + ", ".join(helps)
        + " (more rounds do not: the noise is calibrated for every step of the job)."
    )
