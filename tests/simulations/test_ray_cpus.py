"""The CPUs of a simulation's private Ray: from MEDFED_SIM_CPUS, checked before anything starts."""

import os

import pytest

from common.errors import ConfigError
from simulations.simulation_engine import RAY_CPUS_ENV, _federation_config


def test_the_private_ray_gets_the_cpus_named_or_those_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(RAY_CPUS_ENV, "3")
    assert _federation_config(5, 1.0, None).endswith(" init-args-num-cpus=3")
    monkeypatch.delenv(RAY_CPUS_ENV)
    usable = len(os.sched_getaffinity(0))
    assert _federation_config(5, 1.0, None).endswith(f" init-args-num-cpus={usable}")
    # Joining an existing cluster: its own CPUs count, no size is passed.
    assert "init-args" not in _federation_config(5, 1.0, "127.0.0.1:6379")


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_cpu_count_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(RAY_CPUS_ENV, value)
    with pytest.raises(ConfigError, match=f"{RAY_CPUS_ENV}: '{value}' is not a whole number"):
        _federation_config(2, 1.0, None)


def test_a_site_larger_than_the_ray_is_refused_instead_of_waiting_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(RAY_CPUS_ENV, "1")
    with pytest.raises(ConfigError, match="--cpus-per-site: 2 CPUs per site exceed the 1"):
        _federation_config(2, 2.0, None)
