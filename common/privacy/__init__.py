"""DP-SGD at the site, per patient or per image, with an accountant that spans every round."""

from common.privacy.accounting import (
    RDP_ORDERS,
    PrivacyState,
    PrivacyUnit,
    calibrate_noise_multiplier,
    epsilon_of,
)
from common.privacy.image_dp import SitePrivacyEngine, planned_round
from common.privacy.patient_dp import (
    PatientPrivacyEngine,
    clipped_patient_sum,
    wrap_for_per_sample_gradients,
)
from common.privacy.patient_sampling import PatientSampling
from common.privacy.per_sample_gradients import (
    clip_and_sum,
    fast_path_blockers,
    per_sample_gradients,
)
from common.privacy.planning import RoundPlan, plan_round, planned_local_round
from common.privacy.unit import privacy_unit

__all__ = [
    "RDP_ORDERS",
    "PatientPrivacyEngine",
    "PatientSampling",
    "PrivacyState",
    "PrivacyUnit",
    "RoundPlan",
    "SitePrivacyEngine",
    "calibrate_noise_multiplier",
    "clip_and_sum",
    "clipped_patient_sum",
    "epsilon_of",
    "fast_path_blockers",
    "per_sample_gradients",
    "plan_round",
    "planned_local_round",
    "planned_round",
    "privacy_unit",
    "wrap_for_per_sample_gradients",
]
