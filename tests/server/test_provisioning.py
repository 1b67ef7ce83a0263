"""Provisioning writes a CA, a coordinator certificate and site kits that fit together."""

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.errors import ConfigError
from server.provisioning import KitPaths, load_federation, provision


def _federation(tmp_path: Path, sites: list[str], address: str = "fl.hospital-net.org") -> Path:
    path = tmp_path / "federation.toml"
    body = f'[coordinator]\naddress = "{address}"\nfleet-port = 9443\n'
    body += "".join(f'[[sites]]\nname = "{site}"\n' for site in sites)
    path.write_text(body)
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_kits_hold_private_keys_0600_and_a_server_certificate_for_the_address(
    tmp_path: Path,
) -> None:
    federation = load_federation(_federation(tmp_path, ["hospital-a", "hospital-b"]))
    added = provision(federation, tmp_path / "kits")
    kits = KitPaths(tmp_path / "kits")
    assert added == ["hospital-a", "hospital-b"]
    for key in (kits.ca_key, kits.coordinator / "server.key", kits.site("hospital-a") / "site.key"):
        assert _mode(key) == 0o600, key

    ca = x509.load_pem_x509_certificate(kits.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate((kits.coordinator / "server.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "fl.hospital-net.org" in names.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    site = kits.site("hospital-a")
    private = serialization.load_ssh_private_key((site / "site.key").read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.curve.name == "secp384r1"
    public = serialization.load_ssh_public_key((site / "site.key.pub").read_bytes())
    assert public.public_numbers() == private.public_key().public_numbers()
    assert (site / "ca.crt").read_bytes() == kits.ca_cert.read_bytes()
    assert 'superlink = "fl.hospital-net.org:9443"' in (site / "site.toml").read_text()
    assert "medfed-site start" in (site / "README.md").read_text()


def test_rerun_adds_a_site_and_leaves_existing_kits_valid(tmp_path: Path) -> None:
    out = tmp_path / "kits"
    provision(load_federation(_federation(tmp_path, ["hospital-a"])), out)
    kits = KitPaths(out)
    before = {
        path: path.read_bytes()
        for path in [kits.ca_cert, kits.ca_key, *kits.site("hospital-a").iterdir()]
    }
    server_before = (kits.coordinator / "server.crt").read_bytes()

    added = provision(load_federation(_federation(tmp_path, ["hospital-a", "hospital-c"])), out)

    assert added == ["hospital-c"]
    assert {path: path.read_bytes() for path in before} == before
    assert (kits.coordinator / "server.crt").read_bytes() == server_before
    assert (kits.site("hospital-c") / "ca.crt").read_bytes() == before[kits.ca_cert]


def test_a_new_address_reissues_the_server_certificate_under_the_same_ca(tmp_path: Path) -> None:
    out = tmp_path / "kits"
    provision(load_federation(_federation(tmp_path, ["hospital-a"], "10.0.0.5")), out)
    ca_before = KitPaths(out).ca_cert.read_bytes()
    provision(load_federation(_federation(tmp_path, ["hospital-a"], "10.0.0.9")), out)
    kits = KitPaths(out)
    server = x509.load_pem_x509_certificate((kits.coordinator / "server.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.9") in names.get_values_for_type(x509.IPAddress)
    assert kits.ca_cert.read_bytes() == ca_before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[coordinator]\naddress = "x"\n[[sites]]\nname = "Hospital A"\n', "lower-case"),
        ('[coordinator]\naddress = "x"\n[[sites]]\nname = "a"\n[[sites]]\nname = "a"\n', "unique"),
        ('[[sites]]\nname = "a"\n', "address"),
        ("[coordinator\n", "not valid TOML"),
    ],
)
def test_a_bad_federation_file_is_named_with_the_reason(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "federation.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message) as error:
        load_federation(path)
    assert str(path) in str(error.value)
