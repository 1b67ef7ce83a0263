"""A site's own limits decide what it trains: the job cannot override them."""

import math
from pathlib import Path

import numpy as np
import pytest
from flwr.common.config import parse_config_args

from client.site_limits import (
    DATA_PATH,
    DELTA,
    MAX_EPSILON,
    PRIVACY_UNIT,
    REQUIRE_DP,
    REQUIRE_SECURE_AGGREGATION,
    SITE_NAME,
    SiteLimits,
)
from client.site_node import SiteKit, supernode_command
from common.config import PrivacyConfig
from common.data.arrays import ImageArrays
from common.errors import ConfigError
from common.federation_job import FederationJob, SecureAggregationConfig
from common.privacy.unit import privacy_unit


def _limits(max_epsilon: float = 8.0, **extra: object) -> SiteLimits:
    return SiteLimits.from_node_config(
        {DATA_PATH: "/srv/cache", SITE_NAME: "hospital-a", MAX_EPSILON: max_epsilon, **extra}
    )


def test_a_job_within_the_budget_is_accepted() -> None:
    _limits().check(FederationJob(privacy=PrivacyConfig(target_epsilon=8.0)))


def test_a_job_above_the_site_budget_is_refused_with_both_numbers() -> None:
    job = FederationJob(name="greedy", privacy=PrivacyConfig(target_epsilon=10.0))
    with pytest.raises(ConfigError, match=r"epsilon 10, above site hospital-a's limit 8"):
        _limits().check(job)


def test_a_job_without_differential_privacy_is_refused() -> None:
    with pytest.raises(ConfigError, match="privacy.enabled = false; site hospital-a requires DP"):
        _limits().check(FederationJob(privacy=PrivacyConfig(enabled=False)))


def test_a_job_without_secure_aggregation_is_refused() -> None:
    job = FederationJob(secure_aggregation=SecureAggregationConfig(enabled=False))
    with pytest.raises(ConfigError, match="secure_aggregation.enabled = false; site hospital-a"):
        _limits().check(job)


def test_a_site_may_waive_secure_aggregation_and_dp_itself() -> None:
    waived = _limits(**{REQUIRE_SECURE_AGGREGATION: False, REQUIRE_DP: False})
    waived.check(FederationJob(secure_aggregation=SecureAggregationConfig(enabled=False)))
    waived.check(FederationJob(privacy=PrivacyConfig(enabled=False)))


def test_a_job_delta_above_the_sites_delta_is_refused_naming_both() -> None:
    job = FederationJob(name="loose", privacy=PrivacyConfig(target_delta=0.5))
    with pytest.raises(ConfigError) as refused:
        _limits().check(job)
    assert str(refused.value) == (
        "job loose: asks delta 0.5, above site hospital-a's delta 1e-05; refused"
    )
    _limits().check(FederationJob(privacy=PrivacyConfig(target_delta=1e-6)))  # stricter: fine
    _limits(**{DELTA: 1e-3}).check(FederationJob(privacy=PrivacyConfig(target_delta=1e-3)))


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0, -1.0])
def test_a_node_config_budget_that_is_not_finite_and_positive_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match=f"{MAX_EPSILON} = {bad}"):
        _limits(bad)


def test_missing_node_config_names_the_keys() -> None:
    with pytest.raises(ConfigError, match=MAX_EPSILON):
        SiteLimits.from_node_config({DATA_PATH: "/srv/cache", SITE_NAME: "a"})


def _kit(tmp_path: Path, max_epsilon: str = "4.5", limits: str = "") -> Path:
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "site.toml").write_text(
        '[site]\nname = "hospital-a"\nsuperlink = "fl.example.org:9092"\n'
        f"[limits]\nmax-epsilon = {max_epsilon}\n{limits}"
    )
    (kit / "ca.crt").write_text("-")
    (kit / "site.key").write_text("-")
    return kit


def test_the_node_config_carries_the_sites_own_data_path_and_budget(tmp_path: Path) -> None:
    command = supernode_command(SiteKit.read(_kit(tmp_path)), tmp_path / "my cache", 9094)
    node_config = command[command.index("--node-config") + 1]
    assert f'{DATA_PATH}="{tmp_path / "my cache"}"' in node_config
    assert f"{MAX_EPSILON}=4.5" in node_config
    assert f"{DELTA}=1e-05" in node_config
    assert f"{REQUIRE_SECURE_AGGREGATION}=true {REQUIRE_DP}=true" in node_config
    assert command[command.index("--superlink") + 1] == "fl.example.org:9092"
    assert "--insecure" not in command


def test_insecure_is_refused_towards_another_machine(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refused for fl.example.org"):
        supernode_command(SiteKit.read(_kit(tmp_path)), tmp_path, 9094, insecure=True)


@pytest.mark.parametrize("bad", ["0", '"lots"', "nan", "inf", "-inf", "-2"])
def test_a_bad_budget_in_site_toml_is_named(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match=r"site.toml: .*max-epsilon = "):
        SiteKit.read(_kit(tmp_path, bad))


@pytest.mark.parametrize("bad", ["0.5e1", "1", "0", "nan", "inf", "-1e-5", '"small"'])
def test_a_bad_delta_in_site_toml_is_named(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match=r"site.toml: .*delta = "):
        SiteKit.read(_kit(tmp_path, limits=f"delta = {bad}\n"))


def test_site_toml_limits_reach_the_client_app_through_the_node_config(tmp_path: Path) -> None:
    """What site.toml sets is what SiteLimits enforces in the ClientApp (no copy to drift)."""
    kit = SiteKit.read(_kit(tmp_path, limits="delta = 1e-6\nrequire-secure-aggregation = false\n"))
    command = supernode_command(kit, tmp_path / "cache", 9094)
    node_config = parse_config_args([command[command.index("--node-config") + 1]])
    limits = SiteLimits.from_node_config(node_config)
    assert (limits.max_epsilon, limits.delta) == (4.5, 1e-6)
    assert (limits.require_secure_aggregation, limits.require_dp) == (False, True)
    with pytest.raises(ConfigError, match="above site hospital-a's delta 1e-06"):
        limits.check(FederationJob())  # the default job's delta 1e-5 is now too loose


def test_a_site_requiring_patients_refuses_an_image_level_job(tmp_path: Path) -> None:
    kit = SiteKit.read(_kit(tmp_path, limits='privacy-unit = "patient"\n'))
    command = supernode_command(kit, tmp_path / "cache", 9094)
    limits = SiteLimits.from_node_config(
        parse_config_args([command[command.index("--node-config") + 1]])
    )
    assert limits.privacy_unit == "patient" and kit.epsilon_unit == "patient"
    job = FederationJob(name="per-image", privacy=PrivacyConfig(unit="image"))
    with pytest.raises(ConfigError) as refused:
        limits.check(job)
    message = str(refused.value)
    assert "\n" not in message
    assert 'per-image: has privacy.unit = "image"; site hospital-a requires "patient"' in message
    limits.check(FederationJob(privacy=PrivacyConfig(target_epsilon=4.0, unit="patient")))


def test_a_site_requiring_patients_runs_auto_per_patient_or_not_at_all(tmp_path: Path) -> None:
    limits = _limits(**{PRIVACY_UNIT: "patient"})
    job = limits.enforced(FederationJob())
    assert job.privacy.unit == "patient"
    no_patients = ImageArrays(np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ConfigError, match="privacy.unit: 'patient' needs data that knows"):
        privacy_unit(job.privacy, no_patients)
    assert _limits().enforced(FederationJob()).privacy.unit == "auto"  # the default: any unit
    assert SiteKit.read(_kit(tmp_path)).epsilon_unit == "image"


@pytest.mark.parametrize("bad", ['"study"', "true", '"Patient"'])
def test_a_bad_privacy_unit_in_site_toml_is_named(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match=r"site.toml: privacy-unit = .*patient, any"):
        SiteKit.read(_kit(tmp_path, limits=f"privacy-unit = {bad}\n"))
