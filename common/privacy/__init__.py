"""DP-SGD at the site, per patient or per image, with an accountant that spans every round.

Names are imported from their submodule on first use (PEP 562 ``__getattr__``): importing one
piece, e.g. ``common.privacy.accounting`` for the ledger, does not load all of DP-SGD (Opacus'
engine, per-sample gradients) into processes that never train, such as Flower's per-message
ClientApp processes of SecAgg+'s key stages or ``medfed-site start``.
"""

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from common.privacy.planning import planned_local_round
    from common.privacy.unit import privacy_unit

#: Each exported name -> the submodule that defines it.
_SOURCES: dict[str, str] = {
    "RDP_ORDERS": "accounting",
    "PrivacyState": "accounting",
    "PrivacyUnit": "accounting",
    "calibrate_noise_multiplier": "accounting",
    "epsilon_of": "accounting",
    "SitePrivacyEngine": "image_dp",
    "planned_round": "image_dp",
    "PatientPrivacyEngine": "patient_dp",
    "clipped_patient_sum": "patient_dp",
    "wrap_for_per_sample_gradients": "patient_dp",
    "PatientSampling": "patient_sampling",
    "clip_and_sum": "per_sample_gradients",
    "fast_path_blockers": "per_sample_gradients",
    "per_sample_gradients": "per_sample_gradients",
    "planned_local_round": "planning",
    "privacy_unit": "unit",
}

__all__ = [
    "RDP_ORDERS",
    "PatientPrivacyEngine",
    "PatientSampling",
    "PrivacyState",
    "PrivacyUnit",
    "SitePrivacyEngine",
    "calibrate_noise_multiplier",
    "clip_and_sum",
    "clipped_patient_sum",
    "epsilon_of",
    "fast_path_blockers",
    "per_sample_gradients",
    "planned_local_round",
    "planned_round",
    "privacy_unit",
    "wrap_for_per_sample_gradients",
]


def __getattr__(name: str) -> Any:
    """Import ``name`` from its submodule the first time it is asked for."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{source}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(ModuleType):
    """This package, where ``per_sample_gradients`` stays the function it exports.

    Importing a submodule binds it on its package; the submodule per_sample_gradients would
    then hide the function of that name (the eager imports this package had rebound it).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, ModuleType) and _SOURCES.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
