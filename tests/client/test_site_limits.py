"""A site's own limits decide what it trains: the job cannot override them."""

from pathlib import Path

import pytest

from client.site_limits import DATA_PATH, MAX_EPSILON, SITE_NAME, SiteLimits
from client.site_node import SiteKit, supernode_command
from common.config import PrivacyConfig
from common.errors import ConfigError
from common.federation_job import FederationJob


def _limits(max_epsilon: float = 8.0) -> SiteLimits:
    return SiteLimits.from_node_config(
        {DATA_PATH: "/srv/cache", SITE_NAME: "hospital-a", MAX_EPSILON: max_epsilon}
    )


def test_a_job_within_the_budget_is_accepted() -> None:
    _limits().check(FederationJob(privacy=PrivacyConfig(target_epsilon=8.0)))


def test_a_job_above_the_site_budget_is_refused_with_both_numbers() -> None:
    job = FederationJob(name="greedy", privacy=PrivacyConfig(target_epsilon=10.0))
    with pytest.raises(ConfigError, match=r"epsilon 10, above site hospital-a's limit 8"):
        _limits().check(job)


def test_a_job_without_differential_privacy_is_refused() -> None:
    with pytest.raises(ConfigError, match="only with differential privacy"):
        _limits().check(FederationJob(privacy=PrivacyConfig(enabled=False)))


def test_missing_node_config_names_the_keys() -> None:
    with pytest.raises(ConfigError, match=MAX_EPSILON):
        SiteLimits.from_node_config({DATA_PATH: "/srv/cache", SITE_NAME: "a"})


def _kit(tmp_path: Path, max_epsilon: str = "4.5") -> Path:
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "site.toml").write_text(
        '[site]\nname = "hospital-a"\nsuperlink = "fl.example.org:9092"\n'
        f"[limits]\nmax-epsilon = {max_epsilon}\n"
    )
    (kit / "ca.crt").write_text("-")
    (kit / "site.key").write_text("-")
    return kit


def test_the_node_config_carries_the_sites_own_data_path_and_budget(tmp_path: Path) -> None:
    command = supernode_command(SiteKit.read(_kit(tmp_path)), tmp_path / "my cache", 9094)
    node_config = command[command.index("--node-config") + 1]
    assert f'{DATA_PATH}="{tmp_path / "my cache"}"' in node_config
    assert f"{MAX_EPSILON}=4.5" in node_config
    assert command[command.index("--superlink") + 1] == "fl.example.org:9092"
    assert "--insecure" not in command


def test_insecure_is_refused_towards_another_machine(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refused for fl.example.org"):
        supernode_command(SiteKit.read(_kit(tmp_path)), tmp_path, 9094, insecure=True)


@pytest.mark.parametrize("bad", ["0", '"lots"'])
def test_a_bad_budget_in_site_toml_is_named(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="site.toml"):
        SiteKit.read(_kit(tmp_path, bad))
