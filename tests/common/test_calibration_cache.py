"""A kept noise multiplier is Opacus' own, and a kept value that would spend more is not used."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opacus.accountants.utils import get_noise_multiplier

from common.config import PrivacyConfig
from common.privacy import calibration_cache
from common.privacy.accounting import (
    EPSILON_TOLERANCE,
    calibrate_noise_multiplier,
    conversion_options,
    epsilon_of,
)

CONFIG = PrivacyConfig(target_epsilon=4.0, target_delta=1e-5)
SAMPLE_RATE, STEPS = 32 / 400, 50


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv(calibration_cache.CACHE_DIR_ENV, str(tmp_path / "cache"))
    calibrate_noise_multiplier.cache_clear()  # the per-process copy would hide the disk
    yield calibration_cache.cache_dir()
    calibrate_noise_multiplier.cache_clear()


def _calibrate() -> float:
    calibrate_noise_multiplier.cache_clear()
    return calibrate_noise_multiplier(CONFIG, SAMPLE_RATE, steps=STEPS)


def _calibrate_steps(sample_rate: float, steps: int) -> float:
    calibrate_noise_multiplier.cache_clear()
    return calibrate_noise_multiplier(CONFIG, sample_rate, steps=steps)


def _entry(cache: Path) -> Path:
    (entry,) = cache.glob("*.json")
    return entry


def _rewrite(cache: Path, noise_multiplier: float | str) -> None:
    entry = _entry(cache)
    raw = json.loads(entry.read_text())
    raw["noise_multiplier"] = noise_multiplier
    entry.write_text(json.dumps(raw))


def test_the_first_search_is_opacus_and_is_kept_on_disk(cache: Path) -> None:
    opacus = get_noise_multiplier(
        target_epsilon=4.0, target_delta=1e-5, sample_rate=SAMPLE_RATE, steps=STEPS,
        accountant="rdp", **conversion_options(CONFIG),
    )  # fmt: skip
    assert _calibrate() == opacus
    assert json.loads(_entry(cache).read_text())["noise_multiplier"] == opacus
    # Epochs are Opacus' int(epochs / sample rate) steps: the same search, the same entry.
    assert calibrate_noise_multiplier(CONFIG, 0.25, 3) == _calibrate_steps(0.25, 12)
    assert len(list(cache.glob("*.json"))) == 2


def test_a_kept_value_is_used_only_while_the_accountant_confirms_it(cache: Path) -> None:
    searched = _calibrate()
    # A value within the search's tolerance is taken from the disk, not searched again.
    nearby = searched * 1.0001
    assert 4.0 - EPSILON_TOLERANCE <= epsilon_of(CONFIG, [(nearby, SAMPLE_RATE, STEPS)]) <= 4.0
    _rewrite(cache, nearby)
    assert _calibrate() == nearby
    # Less noise (a tampered file) would spend more than the target: searched again, replaced.
    _rewrite(cache, searched / 2)
    assert _calibrate() == searched
    assert json.loads(_entry(cache).read_text())["noise_multiplier"] == searched
    # Far more noise would waste the budget: searched again too.
    _rewrite(cache, searched * 3)
    assert _calibrate() == searched


@pytest.mark.parametrize("damage", ["not json", '{"key": 1}', "nan"])
def test_a_damaged_entry_is_searched_again(cache: Path, damage: str) -> None:
    searched = _calibrate()
    if damage == "nan":
        _rewrite(cache, "NaN")
    else:
        _entry(cache).write_text(damage)
    assert _calibrate() == searched


def test_a_folder_that_cannot_be_written_costs_only_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(calibration_cache.CACHE_DIR_ENV, str(blocker / "cache"))
    calibrate_noise_multiplier.cache_clear()
    try:
        assert calibrate_noise_multiplier(CONFIG, SAMPLE_RATE, steps=STEPS) > 0
    finally:
        calibrate_noise_multiplier.cache_clear()
