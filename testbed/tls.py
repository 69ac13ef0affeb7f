"""A test CA and the certificates it signs (cryptography's x509 builder): servers (a BMC, the
Temporal frontend, the boot server) and clients (workers, agents), for the security tests."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


class TestCA:
    """A self-signed CA in DIR (ca.pem, ca.key); `issue` signs leaf certificates next to it."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "metalflow test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert = directory / "ca.pem"
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, name: str, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), client: bool = False
    ) -> Issued:
        """A leaf for NAME: a server certificate for HOSTS (IPs and DNS names), or a client one."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        out = Issued(self.dir / f"{name}.pem", self.dir / f"{name}.key")
        out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, out.key)
        return out


@dataclass(frozen=True)
class TemporalPKI:
    """The stack's mTLS (testbed/stack.py): the frontend's certificate from a server CA; clients
    from two CAs of their own, so a control-plane identity and an agent identity differ by issuer
    (and a leaked agent certificate is revoked by rotating the agent CA alone)."""

    server_ca: Path
    frontend: Issued
    system_worker: Issued
    control_plane_ca: Path
    control_plane: Issued
    agent_ca: Path
    agent: Issued
    server_name: str = "localhost"

    @classmethod
    def create(cls, directory: Path) -> TemporalPKI:
        server = TestCA(directory / "server", "temporal server CA")
        control = TestCA(directory / "control-plane", "metalflow control-plane CA")
        agents = TestCA(directory / "agents", "metalflow agent CA")
        return cls(
            server_ca=server.cert,
            frontend=server.issue("frontend"),
            system_worker=server.issue("system-worker", client=True),
            control_plane_ca=control.cert,
            control_plane=control.issue("metalflow-control-plane", client=True),
            agent_ca=agents.cert,
            agent=agents.issue("metalflow-agent", client=True),
        )

    def server_config(self) -> dict[str, object]:
        """temporal-server's `global.tls`: the frontend requires a client certificate from one of
        the client CAs (or the server CA: its own system worker)."""
        return {
            "frontend": {
                "server": {
                    "certFile": str(self.frontend.cert),
                    "keyFile": str(self.frontend.key),
                    "requireClientAuth": True,
                    "clientCaFiles": [str(self.control_plane_ca), str(self.agent_ca), str(self.server_ca)],
                }
            },
            "systemWorker": {
                "certFile": str(self.system_worker.cert),
                "keyFile": str(self.system_worker.key),
                "client": {"serverName": self.server_name, "rootCaFiles": [str(self.server_ca)]},
            },
        }

    def client_env(self, identity: Issued | None = None) -> dict[str, str]:
        """METALFLOW_TEMPORAL_TLS_* for a control-plane process (or another identity)."""
        who = identity or self.control_plane
        return {
            "METALFLOW_TEMPORAL_TLS_CA": str(self.server_ca),
            "METALFLOW_TEMPORAL_TLS_CERT": str(who.cert),
            "METALFLOW_TEMPORAL_TLS_KEY": str(who.key),
            "METALFLOW_TEMPORAL_TLS_SERVER_NAME": self.server_name,
        }

    def cli_args(self) -> list[str]:
        """The `temporal` CLI's flags for an operator with the control-plane identity."""
        return [
            "--tls-ca-path", str(self.server_ca),
            "--tls-cert-path", str(self.control_plane.cert),
            "--tls-key-path", str(self.control_plane.key),
            "--tls-server-name", self.server_name,
        ]  # fmt: skip
