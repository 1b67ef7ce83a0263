"""Which unit a site's DP-SGD protects: the patient when the data knows its patients."""

import logging

from common.config import PrivacyConfig
from common.data.arrays import ImageArrays
from common.errors import ConfigError
from common.privacy.accounting import PrivacyUnit

__all__ = ["privacy_unit"]

logger = logging.getLogger(__name__)


def privacy_unit(config: PrivacyConfig, data: ImageArrays) -> PrivacyUnit:
    """The unit DP-SGD runs with on ``data``.

    "image" when the job asks for it. "patient" when the data has patient keys (a cache from
    ``medfed-site prepare``). On data without patient keys (a plain .npz, an image folder) a
    job that asks for ``privacy.unit = "patient"`` is refused; the default ("auto") runs per
    image there, logged here and reported with every epsilon.

    Raises:
        ConfigError: ``privacy.unit = "patient"`` was set but the data has no patient keys.
    """
    if config.unit == "image":
        return "image"
    if data.patients is not None:
        return "patient"
    if config.unit == "patient":
        raise ConfigError(
            "privacy.unit",
            "'patient' needs data that knows its patients, and this data has no patient keys "
            "(a plain .npz or image folder): prepare it with medfed-site prepare, or set "
            'privacy.unit = "image"',
        )
    logger.warning("the data has no patient keys: DP-SGD protects each image (epsilon per image)")
    return "image"
