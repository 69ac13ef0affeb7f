"""The payload codec (metalflow/runtime/payload_codec.py) and the converter that marks the agent's
traffic: sealed payloads carry no plaintext, rotation keeps old history readable, a missing or
wrong key and a bad key file fail with errors that name the fix and never a key."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload

from metalflow.api.agent import CleanRequest, WriteImageResult
from metalflow.api.models import HostSpec
from metalflow.runtime.converter import ControlPlanePayloadConverter, agent_data_converter
from metalflow.runtime.payload_codec import (
    ENCODING,
    KEY_ID,
    PLAINTEXT_MARK,
    EncryptionCodec,
    PayloadKeyError,
    PayloadKeys,
    load_payload_keys,
    new_key,
)
from metalflow.runtime.settings import Settings
from metalflow.runtime.temporal import data_converter

BMC = {"address": "redfish://10.0.0.9/redfish/v1/Systems/1", "credentials": {"name": "bmc-9"}}
SPEC = HostSpec.model_validate({"online": True, "bmc": BMC})


def keys(active: str, *ids: str) -> PayloadKeys:
    return PayloadKeys(active=active, keys={i: new_key() for i in {active, *ids}})


def payload(value: object) -> Payload:
    return ControlPlanePayloadConverter().to_payloads([value])[0]


def test_sealed_payload_hides_its_content_and_opens_to_the_same_bytes() -> None:
    codec = EncryptionCodec(keys("k1"))
    plain = payload(SPEC)
    assert b"10.0.0.9" in plain.data and b"bmc-9" in plain.data
    [sealed] = asyncio.run(codec.encode([plain]))
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KEY_ID] == b"k1"
    assert b"10.0.0.9" not in sealed.SerializeToString() and b"bmc-9" not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString()  # the inner encoding is sealed too
    [opened] = asyncio.run(codec.decode([sealed]))
    assert opened == plain
    # the same value twice seals differently (a fresh nonce): equal specs are not linkable
    assert asyncio.run(codec.encode([plain]))[0].data != sealed.data


def test_rotation_reads_old_payloads_and_seals_new_ones_with_the_active_key() -> None:
    old = keys("2026-06")
    [sealed_old] = asyncio.run(EncryptionCodec(old).encode([payload(SPEC)]))
    rotated = PayloadKeys(active="2026-12", keys={**old.keys, "2026-12": new_key()})
    codec = EncryptionCodec(rotated)
    assert asyncio.run(codec.decode([sealed_old]))[0] == payload(SPEC)
    assert asyncio.run(codec.encode([payload(SPEC)]))[0].metadata[KEY_ID] == b"2026-12"
    # the old key dropped too early: the error names the key id and the fix
    dropped = EncryptionCodec(PayloadKeys(active="2026-12", keys={"2026-12": rotated.keys["2026-12"]}))
    with pytest.raises(PayloadKeyError, match=r"key '2026-06', which this process lacks: add it"):
        asyncio.run(dropped.decode([sealed_old]))


def test_altered_ciphertext_or_a_relabelled_key_id_does_not_open() -> None:
    both = keys("a", "b")
    codec = EncryptionCodec(both)
    [sealed] = asyncio.run(codec.encode([payload(SPEC)]))
    flipped = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(PayloadKeyError, match="does not open: altered"):
        asyncio.run(codec.decode([flipped]))
    relabelled = Payload(metadata={**sealed.metadata, KEY_ID: b"b"}, data=sealed.data)
    with pytest.raises(PayloadKeyError, match="key 'b' does not open"):
        asyncio.run(codec.decode([relabelled]))


def test_the_agents_traffic_is_marked_and_left_unsealed_and_the_rest_is_not() -> None:
    codec = EncryptionCodec(keys("k"))
    req, result = (
        payload(CleanRequest(mode="metadata")),
        payload(WriteImageResult(device="/dev/vda", bytes_written=1, checksum="ab", checksum_type="sha256")),
    )
    assert req.metadata[PLAINTEXT_MARK] == b"agent" and result.metadata[PLAINTEXT_MARK] == b"agent"
    assert PLAINTEXT_MARK not in payload(SPEC).metadata and PLAINTEXT_MARK not in payload("host-a").metadata
    assert asyncio.run(codec.encode([req]))[0] == req
    # whatever the ramdisk sends (a heartbeat's dict too) is marked: it has no key to seal with
    [beat] = agent_data_converter.payload_converter.to_payloads([{"bytes_written": 5}])
    assert beat.metadata[PLAINTEXT_MARK] == b"agent"
    # and a plaintext payload (the agent's, or history from before a key) opens as it is
    assert asyncio.run(codec.decode([beat]))[0] == beat


def test_the_control_plane_converter_seals_only_with_a_key_file(tmp_path: Path) -> None:
    assert data_converter(Settings(payload_keys_file=None)).payload_codec is None
    f = tmp_path / "keys.json"
    f.write_text(json.dumps({"active": "k", "keys": {"k": new_key()}}))
    codec = data_converter(Settings(payload_keys_file=f)).payload_codec
    assert isinstance(codec, EncryptionCodec) and codec.active_key_id == "k"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"keys.json: not JSON \(line 1\); `metalflow payload-key new --id ID` makes one"),
        ('{"active": "k", "keys": {"k": "c2hvcnQ="}}', r"keys.json: keys: .*keys.k: 5 bytes, AES-256"),
        ('{"active": "k", "keys": {"k": "not base64!"}}', r"keys.json: keys: .*keys.k: not base64"),
        ('{"active": "x", "keys": {"k": "KEY"}}', r"keys.json: \(top level\): .*'x' is not among keys \(k\)"),
        ('{"keys": {"k": "KEY"}}', r"keys.json: active: Field required"),
    ],
    ids=["json", "short", "base64", "active", "missing"],
)
def test_a_bad_key_file_names_the_field_and_never_quotes_a_key(
    tmp_path: Path, content: str, message: str
) -> None:
    key = new_key()
    f = tmp_path / "keys.json"
    f.write_text(content.replace("KEY", key))
    with pytest.raises(PayloadKeyError, match=message) as err:
        load_payload_keys(f)
    assert key not in str(err.value) and "c2hvcnQ=" not in str(err.value)


def test_payload_key_new_adds_a_key_makes_it_active_and_keeps_the_old(tmp_path: Path) -> None:
    from metalflow.cli.main import build_parser

    f = tmp_path / "keys.json"
    settings = Settings(payload_keys_file=None)
    for key_id in ("2026-06", "2026-12"):
        args = build_parser().parse_args(["payload-key", "new", "--file", str(f), "--id", key_id])
        assert asyncio.run(args.run(args, settings)) == 0
    got = load_payload_keys(f)
    assert got.active == "2026-12" and set(got.keys) == {"2026-06", "2026-12"}
    assert len(base64.b64decode(got.keys["2026-06"])) == 32 and f.stat().st_mode & 0o077 == 0
    args = build_parser().parse_args(["payload-key", "new", "--file", str(f), "--id", "2026-12"])
    with pytest.raises(PayloadKeyError, match=r"--id 2026-12: .* already has that key"):
        asyncio.run(args.run(args, settings))


def test_the_agent_needs_no_crypto_library() -> None:
    """The ramdisk has no payload key and no `cryptography` wheel (testbed/ramdisk.py): the agent's
    converter must import without it."""
    import subprocess
    import sys

    probe = (
        "import sys, metalflow.cli.agent, worker.agent, activities.agent; "
        "print(sorted(m for m in sys.modules if m.startswith('cryptography')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
