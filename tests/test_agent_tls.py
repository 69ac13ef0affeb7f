"""The agent's TLS to the Temporal frontend, as the deploy ramdisk's init asks for it
(`metalflow.tls=1 metalflow.tls_ca=... metalflow.tls_server_name=...` -> `metalflow agent --tls
--tls-ca FILE --tls-server-name NAME`): the agent (Temporal's Rust core) opens a real TLS
connection to a loopback TLS server, checks its certificate against the given CA and sends the
given server name; a certificate from another CA is refused. The loopback server speaks TLS
only (no gRPC behind it): what is checked is the handshake, which is what the options change."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from activities.boot import ipxe
from metalflow.api.boot import BootPurpose
from metalflow.api.models import HostRef
from metalflow.runtime.settings import Settings
from worker.agent import agent_tls

SERVER_NAME = "temporal.metal.example"


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    signer: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(
            issuer.subject if issuer else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        )
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class TLSServer:
    """One-shot loopback TLS server recording the client's server name and the handshake's outcome."""

    def __init__(self, cert_pem: bytes, key: ec.EllipticCurvePrivateKey, tmp: Path) -> None:
        (tmp / "server.pem").write_bytes(cert_pem)
        (tmp / "server.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(tmp / "server.pem", tmp / "server.key")
        self.ctx.set_alpn_protocols(["h2"])
        self.sni: list[str | None] = []
        self.ctx.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)  # type: ignore[assignment,misc,return-value]
        self.outcome: list[str] = []
        self.done = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(30)
        try:
            with self.ctx.wrap_socket(conn, server_side=True):
                self.outcome.append("handshake ok")
        except (ssl.SSLError, OSError) as err:
            self.outcome.append(f"handshake failed: {err}")
        finally:
            self.done.set()


def _run_agent(port: int, ca: Path, tmp: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "metalflow", "agent", "--host-id", "metal.tls-0",
         "--temporal", f"127.0.0.1:{port}", "--tls-ca", str(ca), "--tls-server-name", SERVER_NAME],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki() -> tuple[bytes, bytes, ec.EllipticCurvePrivateKey]:
    """(our CA's PEM, the frontend's certificate PEM signed by it, the frontend's key)."""
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("metalflow test CA", ca_key, None, ca_key)
    return _pem(ca), _pem(_cert(SERVER_NAME, server_key, ca, ca_key)), server_key


@pytest.mark.timeout(180)
@pytest.mark.parametrize("trusted", [True, False], ids=["our-ca", "another-ca"])
def test_agent_verifies_the_frontend_with_the_given_ca_and_server_name(
    pki: tuple[bytes, bytes, ec.EllipticCurvePrivateKey], tmp_path: Path, trusted: bool
) -> None:
    ca_pem, server_pem, server_key = pki
    other_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ca.pem").write_bytes(
        ca_pem if trusted else _pem(_cert("another CA", other_key, None, other_key))
    )
    server = TLSServer(server_pem, server_key, tmp_path)
    agent = _run_agent(server.port, tmp_path / "ca.pem", tmp_path)
    try:
        assert server.done.wait(150), "the agent never connected"
    finally:
        agent.kill()
        agent.wait(30)
    assert server.sni == [SERVER_NAME]  # the name from --tls-server-name, not the address
    if trusted:
        assert server.outcome == ["handshake ok"]
    else:  # the client refused a certificate our CA did not sign: it alerts the server
        assert server.outcome and server.outcome[0].startswith("handshake failed"), server.outcome


def test_bad_tls_inputs_name_the_flag_and_the_fix(tmp_path: Path) -> None:
    assert agent_tls(False, None, None) is False
    with pytest.raises(ValueError, match=r"--tls-ca .*missing\.pem: cannot read the CA certificate"):
        agent_tls(True, tmp_path / "missing.pem", None)
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(
        ValueError, match=r"--tls-ca .*key\.pem: not a PEM certificate; give the CA's PEM file"
    ):
        agent_tls(True, tmp_path / "key.pem", None)
    done = subprocess.run(
        [sys.executable, "-m", "metalflow", "agent", "--host-id", "a.b", "--temporal", "127.0.0.1:1",
         "--tls-ca", str(tmp_path / "missing.pem")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "--tls-ca" in done.stderr, done.stderr


def test_ipxe_script_carries_the_ca_url_and_server_name_only_with_tls() -> None:
    ref = HostRef(namespace="metal", name="w0")
    on = Settings(
        agent_temporal_tls=True,
        agent_temporal_tls_ca_url="http://192.0.2.1:8088/ca.pem",
        agent_temporal_tls_server_name=SERVER_NAME,
    )
    line = next(
        ln
        for ln in ipxe.script(ref, "52:54:00:00:00:01", BootPurpose.DEPLOY, on).splitlines()
        if ln.startswith("kernel ")
    )
    ca_arg = "metalflow.tls_ca=http://192.0.2.1:8088/ca.pem"
    assert f"metalflow.tls=1 {ca_arg} metalflow.tls_server_name={SERVER_NAME} " in line
    off = Settings(
        agent_temporal_tls_ca_url="http://192.0.2.1:8088/ca.pem", agent_temporal_tls_server_name=SERVER_NAME
    )
    line = next(
        ln
        for ln in ipxe.script(ref, "52:54:00:00:00:01", BootPurpose.DEPLOY, off).splitlines()
        if ln.startswith("kernel ")
    )
    assert "metalflow.tls=0 " in line and "tls_ca" not in line and "tls_server_name" not in line
