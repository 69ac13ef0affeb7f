"""One way to reach Temporal: every control-plane process uses the same data converter (pydantic
JSON, sealed when a payload key file is configured)."""

from __future__ import annotations

from temporalio.client import Client
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


async def connect(settings: Settings | None = None, runtime: Runtime | None = None) -> Client:
    settings = settings or get_settings()
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        runtime=runtime,
    )
