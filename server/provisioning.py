"""Provision a federation: a CA, the coordinator's TLS certificate and one startup kit per site.

Layout written under the output folder (private keys mode 0600, never printed)::

    ca/ca.crt  ca/ca.key                       the federation's CA (keep ca.key offline)
    coordinator/ca.crt server.crt server.key   TLS identity of the SuperLink and its gateway
    sites/<name>/ca.crt site.key site.key.pub site.toml README.md

Re-running with more sites adds their kits; the CA and existing kits are reused, so sites
that already hold a kit keep working.
"""

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.config_files import read_toml, validate_model
from server.site_kit_readme import site_kit_readme

__all__ = ["Federation", "KitPaths", "load_federation", "provision"]

CA_DAYS = 3650
SERVER_CERT_DAYS = 825
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


class Federation(BaseModel):
    """The coordinator's address and the enrolled sites, read from federation.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "medfed"
    address: str = Field(description="host name or IP address the sites connect to")
    fleet_port: int = Field(9092, ge=1, le=65535, alias="fleet-port")
    sites: tuple[str, ...]

    @field_validator("sites")
    @classmethod
    def _site_names_are_simple(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not name or not set(name) <= _NAME_CHARS:
                raise ValueError(f"site name {name!r}: use lower-case letters, digits and '-'")
        if len(set(names)) != len(names):
            raise ValueError("site names must be unique")
        return names

    @property
    def fleet_address(self) -> str:
        """host:port that site nodes dial."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.fleet_port}"


def load_federation(path: Path) -> Federation:
    """Read federation.toml: ``address``, optional ``name``/``fleet-port``, ``[[sites]] name``."""
    raw = read_toml(path)
    coordinator = raw.get("coordinator", {})
    sites = [site.get("name") for site in raw.get("sites", []) if isinstance(site, dict)]
    return validate_model(Federation, {**coordinator, "sites": tuple(sites)}, str(path))


@dataclass(frozen=True)
class KitPaths:
    """Where provisioning writes; shared with the commands that read the kits."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The federation's CA certificate."""
        return self.root / "ca" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA's private key: only the provisioning step needs it."""
        return self.root / "ca" / "ca.key"

    @property
    def coordinator(self) -> Path:
        """The coordinator's kit: CA certificate, server certificate and key."""
        return self.root / "coordinator"

    def site(self, name: str) -> Path:
        """One site's startup kit."""
        return self.root / "sites" / name


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start: the key is never world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ensure_ca(
    paths: KitPaths, federation: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if paths.ca_cert.is_file() and paths.ca_key.is_file():
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{federation} federation CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    _write_private(paths.ca_key, _pem_key(key))
    _write_public(paths.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _subject_alternative_names(address: str) -> x509.SubjectAlternativeName:
    """The coordinator's address plus loopback, where the coordinator's own tools connect."""
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    try:
        ip = ipaddress.ip_address(address)
        if x509.IPAddress(ip) not in names:
            names.append(x509.IPAddress(ip))
    except ValueError:
        if address != "localhost":
            names.append(x509.DNSName(address))
    return x509.SubjectAlternativeName(names)


def issue_server_certificate(
    paths: KitPaths,
    address: str,
    *,
    not_valid_before: datetime.datetime | None = None,
    not_valid_after: datetime.datetime | None = None,
) -> None:
    """(Re)issue the coordinator's TLS certificate for ``address``, signed by the CA.

    The validity window defaults to now until :data:`SERVER_CERT_DAYS` ahead.
    """
    ca_cert, ca_key = _ensure_ca(paths, "medfed")
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_valid_before or _now() - datetime.timedelta(minutes=5))
        .not_valid_after(not_valid_after or _now() + datetime.timedelta(days=SERVER_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_subject_alternative_names(address), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )
    _write_private(paths.coordinator / "server.key", _pem_key(key))
    _write_public(paths.coordinator / "server.crt", cert.public_bytes(serialization.Encoding.PEM))
    _write_public(paths.coordinator / "ca.crt", paths.ca_cert.read_bytes())
    (paths.coordinator / "address").write_text(address + "\n", encoding="utf-8")


def _server_certificate_matches(paths: KitPaths, address: str) -> bool:
    cert_path = paths.coordinator / "server.crt"
    recorded = paths.coordinator / "address"
    return (
        cert_path.is_file()
        and (paths.coordinator / "server.key").is_file()
        and recorded.is_file()
        and recorded.read_text(encoding="utf-8").strip() == address
    )


def _site_toml(federation: Federation, site: str) -> str:
    return f"""# medfed site node configuration for {site}.
# Written by `medfed-server provision`; hospital IT fills in the [limits] values.
[site]
name = "{site}"
# The coordinator's Fleet gateway: the only address this node connects to (outbound HTTPS).
superlink = "{federation.fleet_address}"

[limits]
# These limits are the site's: a job can be refused by them, never change them.
# The most differential-privacy budget (epsilon) spent on this site's data, over all jobs.
# A finite number > 0. A job or round asking for more is refused, whatever the coordinator sends.
max-epsilon = 8.0
# The delta at which every job is accounted; a job asking a larger delta is refused.
delta = 1e-5
# Refuse jobs that switch secure aggregation (SecAgg+) or differential privacy off.
require-secure-aggregation = true
require-dp = true
"""


def _write_site_kit(paths: KitPaths, federation: Federation, site: str) -> bool:
    """Write one site's kit unless it exists; True when it was written now."""
    kit = paths.site(site)
    if (kit / "site.key").is_file():
        return False
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(
        kit / "site.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_public(kit / "site.key.pub", public + f" {site}\n".encode())
    _write_public(kit / "ca.crt", paths.ca_cert.read_bytes())
    (kit / "site.toml").write_text(_site_toml(federation, site), encoding="utf-8")
    (kit / "README.md").write_text(
        site_kit_readme(site, federation.fleet_address), encoding="utf-8"
    )
    return True


def provision(federation: Federation, out: Path) -> list[str]:
    """Write or extend the kits under ``out``; returns the names of the sites added now."""
    paths = KitPaths(out)
    _ensure_ca(paths, federation.name)
    if not _server_certificate_matches(paths, federation.address):
        issue_server_certificate(paths, federation.address)
    return [site for site in federation.sites if _write_site_kit(paths, federation, site)]
