"""One way to reach Temporal: every control-plane process uses the same data converter (pydantic
JSON, sealed when a payload key file is configured)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client, TLSConfig
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime

from metalflow.runtime.converter import ControlPlanePayloadConverter
from metalflow.runtime.payload_codec import EncryptionCodec, load_payload_keys
from metalflow.runtime.settings import Settings, get_settings


def data_converter(settings: Settings) -> DataConverter:
    """The control plane's converter: sealed when `payload_keys_file` is set, plain otherwise."""
    path = settings.payload_keys_file
    codec = None if path is None else EncryptionCodec(load_payload_keys(path))
    return DataConverter(payload_converter_class=ControlPlanePayloadConverter, payload_codec=codec)


class TemporalTLSError(ValueError):
    """A TLS setting that cannot be used; the message names the METALFLOW_* variable."""


CERT, KEY = b"-----BEGIN CERTIFICATE-----", b"PRIVATE KEY-----"


def _pem(path: Path, setting: str, marker: bytes) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TemporalTLSError(f"{setting}={path}: cannot read it ({err.strerror}); fix the path") from None
    if marker not in data:
        what = "certificate" if marker == CERT else "private key"
        raise TemporalTLSError(f"{setting}={path}: no PEM {what} in it")
    return data


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS to the frontend: off unless a CA or a client certificate is set; mTLS with both halves."""
    cert, key = settings.temporal_tls_cert, settings.temporal_tls_key
    if (cert is None) != (key is None):
        missing = "METALFLOW_TEMPORAL_TLS_KEY" if key is None else "METALFLOW_TEMPORAL_TLS_CERT"
        raise TemporalTLSError(
            f"{missing} is unset: a client certificate needs both the certificate and its key"
        )
    if settings.temporal_tls_ca is None and cert is None:
        return False
    return TLSConfig(
        server_root_ca_cert=None
        if settings.temporal_tls_ca is None
        else _pem(settings.temporal_tls_ca, "METALFLOW_TEMPORAL_TLS_CA", CERT),
        client_cert=None if cert is None else _pem(cert, "METALFLOW_TEMPORAL_TLS_CERT", CERT),
        client_private_key=None if key is None else _pem(key, "METALFLOW_TEMPORAL_TLS_KEY", KEY),
        domain=settings.temporal_tls_server_name or None,
    )


async def connect(settings: Settings | None = None, runtime: Runtime | None = None) -> Client:
    settings = settings or get_settings()
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        tls=tls_config(settings),
        runtime=runtime,
    )
