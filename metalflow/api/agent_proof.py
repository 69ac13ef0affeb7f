"""Proof that an agent's reply comes from the host's current ramdisk boot.

The agent keys an HMAC-SHA256 with its boot's agent token (activities/boot/agent_tokens.py) over
the activity, the host, the request's nonce (new for every request, made by the workflow) and
the result. The control plane, which holds the token, checks it before the workflow trusts an
inventory, a clean or a write: a poller without the token cannot forge it, an earlier boot's
token no longer matches, and an earlier reply does not carry this request's nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any


def fingerprint(token: str) -> str:
    """What may be shown and stored anywhere: names a token, reveals nothing of it."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def reply_message(activity: str, host_id: str, nonce: str, result: Any) -> bytes:
    """The bytes proved: canonical JSON (sorted keys, no spaces) of the reply and its context."""
    body = {"activity": activity, "host": host_id, "nonce": nonce, "result": result}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def prove(token: str, message: bytes) -> str:
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def proof_matches(token: str, message: bytes, proof: str) -> bool:
    return hmac.compare_digest(prove(token, message).encode(), proof.encode())
