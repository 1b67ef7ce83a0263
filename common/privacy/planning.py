"""What the next round will account, before it runs, in the unit the site's data calls for."""

from common.config import PrivacyConfig
from common.data.arrays import ImageArrays
from common.privacy.accounting import PrivacyState, calibrate_noise_multiplier
from common.privacy.image_dp import planned_round
from common.privacy.patient_sampling import PatientSampling
from common.privacy.unit import privacy_unit

__all__ = ["planned_local_round"]


def planned_local_round(
    config: PrivacyConfig,
    data: ImageArrays,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    state: PrivacyState | None,
) -> tuple[float, float, int]:
    """(noise multiplier, sample rate, steps) common.local_training will account next round.

    Per image it is :func:`~common.privacy.image_dp.planned_round`; per patient the patient
    sampling rate and ``local_epochs`` x steps per epoch, with the noise calibrated (first
    round) for all ``rounds``, exactly as :class:`~common.privacy.PatientPrivacyEngine` does.
    """
    if privacy_unit(config, data) == "image":
        return planned_round(
            config, len(data), batch_size, local_epochs, rounds * local_epochs, state
        )
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
    return noise, sampling.sample_rate, steps
