"""The control plane's TLS settings to Temporal (METALFLOW_TEMPORAL_TLS_*): off unless set, mTLS
with a certificate and its key, and a bad setting named before any connection is tried."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import TLSConfig

from metalflow.runtime.settings import Settings
from metalflow.runtime.temporal import TemporalTLSError, tls_config
from testbed.tls import TestCA


def test_tls_is_off_unless_configured_and_mtls_carries_both_halves(tmp_path: Path) -> None:
    assert tls_config(Settings()) is False
    ca = TestCA(tmp_path / "ca")
    me = ca.issue("metalflow-control-plane", client=True)
    got = tls_config(
        Settings(
            temporal_tls_ca=ca.cert,
            temporal_tls_cert=me.cert,
            temporal_tls_key=me.key,
            temporal_tls_server_name="t",
        )
    )
    assert isinstance(got, TLSConfig) and got.domain == "t"
    assert got.server_root_ca_cert == ca.cert.read_bytes() and got.client_cert == me.cert.read_bytes()
    assert got.client_private_key == me.key.read_bytes()
    only_ca = tls_config(Settings(temporal_tls_ca=ca.cert))
    assert isinstance(only_ca, TLSConfig) and only_ca.client_cert is None


def test_bad_tls_settings_name_the_variable_and_the_fix(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    me = ca.issue("me", client=True)
    with pytest.raises(
        TemporalTLSError, match="METALFLOW_TEMPORAL_TLS_KEY is unset: a client certificate needs both"
    ):
        tls_config(Settings(temporal_tls_cert=me.cert))
    with pytest.raises(
        TemporalTLSError, match=r"METALFLOW_TEMPORAL_TLS_CA=.*nope.pem: cannot read it \(No such file"
    ):
        tls_config(Settings(temporal_tls_ca=tmp_path / "nope.pem"))
    with pytest.raises(
        TemporalTLSError, match=r"METALFLOW_TEMPORAL_TLS_KEY=.*me.pem: no PEM private key in it"
    ):
        tls_config(Settings(temporal_tls_cert=me.cert, temporal_tls_key=me.cert))
    with pytest.raises(TemporalTLSError) as err:
        tls_config(Settings(temporal_tls_cert=me.key, temporal_tls_key=me.key))
    assert "no PEM certificate" in str(err.value) and "PRIVATE" not in str(err.value)
