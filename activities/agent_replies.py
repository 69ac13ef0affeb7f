"""Checking an agent's reply before the workflow acts on it (control plane, a local activity).

The reply must be proved (metalflow/api/agent_proof.py) with the host's current agent token, the
one only the ramdisk booted for this step holds (activities/boot/agent_tokens.py), over this
request's nonce. Anything else is a security event: counted, logged, and the reply never used.
"""

from __future__ import annotations

import logging

from temporalio import activity

from activities.boot import agent_tokens
from metalflow.api.agent import AGENT_VERIFY, ReplyVerdict, VerifyReply
from metalflow.api.agent_proof import proof_matches, reply_message
from metalflow.runtime.metrics import AGENT_REPLIES_REJECTED
from metalflow.runtime.settings import get_settings

log = logging.getLogger(__name__)


def verdict(req: VerifyReply) -> ReplyVerdict:
    boot_dir = get_settings().boot_dir
    token = agent_tokens.current(boot_dir, req.host.host_id)
    reply = req.reply
    if token is None:
        return ReplyVerdict(
            ok=False, reason="the host is in no ramdisk boot: no agent token is issued", reboot=True
        )
    if not reply.proof:
        return ReplyVerdict(ok=False, reason="the reply carries no proof of the boot's agent token")
    if reply.token != token.fingerprint:
        return ReplyVerdict(
            ok=False,
            reason=f"the reply is proved with agent token {reply.token or '(none)'}, not this boot's "
            f"{token.fingerprint} (an earlier boot's, or a forgery)",
        )
    if not proof_matches(
        token.value, reply_message(req.activity, req.host.host_id, req.nonce, reply.result), reply.proof
    ):
        return ReplyVerdict(
            ok=False, reason="the reply's proof does not match it (forged, altered, or another request's)"
        )
    if agent_tokens.refetches(boot_dir, req.host.host_id):
        return ReplyVerdict(
            ok=False,
            reason="this boot's agent token was handed out twice (its iPXE script fetched again): "
            "whoever holds it may not be the host",
            reboot=True,
        )
    return ReplyVerdict(ok=True)


@activity.defn(name=AGENT_VERIFY)
def verify_reply(req: VerifyReply) -> ReplyVerdict:
    found = verdict(req)
    if not found.ok:
        AGENT_REPLIES_REJECTED.labels(req.activity).inc()
        log.warning("SECURITY: %s's reply to %s rejected: %s", req.host.host_id, req.activity, found.reason)
    return found


ACTIVITIES = [verify_reply]
