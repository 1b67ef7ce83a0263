"""What the next round will account, before it runs, in the unit the site's data calls for."""

from dataclasses import dataclass

from common.config import PrivacyConfig
from common.data.arrays import ImageArrays
from common.privacy.accounting import PrivacyState, PrivacyUnit, calibrate_noise_multiplier
from common.privacy.image_dp import planned_round
from common.privacy.patient_sampling import PatientSampling
from common.privacy.unit import privacy_unit

__all__ = ["RoundPlan", "plan_round"]


@dataclass(frozen=True)
class RoundPlan:
    """One site's next DP-SGD round as it will run and be accounted, worked out once.

    The noise multiplier is the job's: calibrated on the first round (the costly part, a
    search over Opacus' accountant) and taken from the state on later rounds. One plan serves
    the learnability warning, the ledger's reservation and the training of a round.
    """

    unit: PrivacyUnit
    #: How many units (images or patients) the round's samples hold.
    units: int
    noise_multiplier: float
    #: Poisson sampling rate of the unit.
    sample_rate: float
    #: Steps the round takes (its accountant events, at most: an empty draw is still a step).
    steps: int

    @property
    def accounting(self) -> tuple[float, float, int]:
        """(noise multiplier, sample rate, steps), as the ledger reserves a round."""
        return self.noise_multiplier, self.sample_rate, self.steps

    def starting_state(self, previous: PrivacyState | None) -> PrivacyState:
        """The state training starts from: ``previous``, else the plan's noise, no history.

        On the first round that is the state the engines would build, without calibrating again.
        """
        if previous is not None:
            return previous
        return PrivacyState(self.noise_multiplier, self.sample_rate, [], unit=self.unit)


def plan_round(
    config: PrivacyConfig,
    data: ImageArrays,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    state: PrivacyState | None,
    unit: PrivacyUnit | None = None,
) -> RoundPlan:
    """The next round's plan on ``data`` (the samples a round trains on).

    Per image it is :func:`~common.privacy.image_dp.planned_round`; per patient the patient
    sampling rate and ``local_epochs`` x steps per epoch, with the noise calibrated (first
    round) for all ``rounds``, exactly as :class:`~common.privacy.patient_dp.PatientPrivacyEngine`
    does.
    ``unit`` defaults to :func:`~common.privacy.unit.privacy_unit` of ``config`` and ``data``.

    Raises:
        ConfigError: per patient on data without patients, or with too few patients for one
            expected step (as training would).
    """
    unit = unit or privacy_unit(config, data)
    if unit == "image":
        noise, rate, steps = planned_round(
            config, len(data), batch_size, local_epochs, rounds * local_epochs, state
        )
        return RoundPlan("image", len(data), noise, rate, steps)
    sampling = PatientSampling.plan(
        data.patients,  # type: ignore[arg-type]  # privacy_unit checked it is set
        batch_size,
        config.max_images_per_patient,
    )
    steps = local_epochs * sampling.steps_per_epoch
    noise = (
        state.noise_multiplier
        if state is not None
        else calibrate_noise_multiplier(config, sampling.sample_rate, steps=rounds * steps)
    )
    return RoundPlan("patient", sampling.num_patients, noise, sampling.sample_rate, steps)
