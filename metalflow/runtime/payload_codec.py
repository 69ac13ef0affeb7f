"""Payloads in Temporal's history as AES-256-GCM ciphertext, with a key id for rotation.

Temporal stores every workflow input, result, memo and activity argument; the operators who can
read the database or the UI are not all the operators who may read a host's spec. With a key file
configured, each payload is sealed before it leaves the process and opened after it arrives; the
codec server (`metalflow codec-server`) opens them for the UI and the `temporal` CLI of operators
who hold the key. Search attributes stay readable: they are indexes and hold no secret.

Not sealed, by design: what the deploy ramdisk exchanges (the agent holds no key, so a ramdisk that
is stolen or impersonated reveals none). Those payloads carry the `metalflow-plaintext` mark
(`metalflow.runtime.converter`) and their models are secret-free by contract (metalflow.api.agent).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from metalflow.runtime.converter import PLAINTEXT_MARK

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
HOW_TO_MAKE = "`metalflow payload-key new --id ID` makes one"


class PayloadKeyError(ValueError):
    """A key file that cannot be used, or a payload sealed with a key this process lacks."""


class PayloadKeys(BaseModel):
    """The key file (a Kubernetes Secret's key, or a file given by METALFLOW_PAYLOAD_KEYS_FILE):
    `{"active": ID, "keys": {ID: base64 of 32 random bytes, ...}}`. New payloads are sealed with
    `active`; every key listed still opens what it sealed, so rotation is: add a key, make it
    active, drop the old one once no history needs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    active: str = Field(min_length=1, max_length=64)
    keys: dict[str, str] = Field(min_length=1)

    @field_validator("keys")
    @classmethod
    def _keys_are_aes256(cls, keys: dict[str, str]) -> dict[str, str]:
        for key_id, value in keys.items():
            try:
                raw = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise ValueError(f"keys.{key_id}: not base64; {HOW_TO_MAKE}") from None
            if len(raw) != 32:
                raise ValueError(f"keys.{key_id}: {len(raw)} bytes, AES-256 needs 32; {HOW_TO_MAKE}")
        return keys

    @model_validator(mode="after")
    def _active_is_listed(self) -> PayloadKeys:
        if self.active not in self.keys:
            listed = ", ".join(sorted(self.keys))
            raise ValueError(f"active: {self.active!r} is not among keys ({listed}); add it")
        return self

    def raw(self, key_id: str) -> bytes:
        return base64.b64decode(self.keys[key_id])


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def load_payload_keys(path: Path) -> PayloadKeys:
    """Read and check the key file; the error names the file and the field, never a key."""
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise PayloadKeyError(f"payload key file {path}: cannot read it ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise PayloadKeyError(
            f"payload key file {path}: not JSON (line {err.lineno}); {HOW_TO_MAKE}"
        ) from None
    try:
        return PayloadKeys.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise PayloadKeyError(f"payload key file {path}: {where}: {first['msg']}") from None


class EncryptionCodec(PayloadCodec):
    """Seal with the active key; open with whichever key the payload names."""

    def __init__(self, keys: PayloadKeys) -> None:
        self._keys = keys
        self._ciphers = {key_id: AESGCM(keys.raw(key_id)) for key_id in keys.keys}

    @property
    def active_key_id(self) -> str:
        return self._keys.active

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.open(p) for p in payloads]

    def seal(self, payload: Payload) -> Payload:
        if PLAINTEXT_MARK in payload.metadata:
            return payload
        key_id = self._keys.active
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(metadata={"encoding": ENCODING, KEY_ID: key_id.encode()}, data=nonce + sealed)

    def open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # plaintext: the agent's, or written before a key was configured
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(
                f"payload sealed with key {key_id!r}, which this process lacks: add it to the key file's keys"
            )
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise PayloadKeyError(
                f"payload sealed with key {key_id!r} does not open: altered, or another key of that id"
            ) from None
        out = Payload()
        out.ParseFromString(plain)
        return out
