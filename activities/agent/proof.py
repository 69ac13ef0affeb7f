"""The agent proves each reply with its boot's agent token (metalflow/api/agent_proof.py).

An activity interceptor, so the activities stay as they are: a request that carries a nonce is
answered with an `AgentReply` (the result as JSON, and an HMAC over it, the activity, the host
and the nonce); one without (a workflow from before proofs) gets the bare result.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_jsonable_python
from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.agent.config import AgentConfig
from metalflow.api.agent import AgentReply
from metalflow.api.agent_proof import fingerprint, prove, reply_message


def proved_reply(config: AgentConfig, activity_type: str, nonce: str, result: Any) -> AgentReply:
    body = to_jsonable_python(result, by_alias=True)
    if config.token is None:  # the boot medium carried none: the control plane rejects it
        return AgentReply(result=body)
    token = config.token.get_secret_value()
    message = reply_message(activity_type, config.host_id, nonce, body)
    return AgentReply(result=body, proof=prove(token, message), token=fingerprint(token))


class ProvingInterceptor(Interceptor):
    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Proving(next, self.config)


class _Proving(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, config: AgentConfig) -> None:
        super().__init__(next)
        self.config = config

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await self.next.execute_activity(input)
        nonce = getattr(input.args[0], "nonce", "") if input.args else ""
        if not nonce:
            return result
        return proved_reply(self.config, activity.info().activity_type, nonce, result)
