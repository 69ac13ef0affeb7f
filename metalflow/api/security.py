"""Security events a host's status keeps: agent replies its steps refused to act on."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from metalflow.api.model_base import Model

# A step workflow tells its HostWorkflow (workflows/inband.py -> workflows/host.py).
SECURITY_EVENT_SIGNAL = "security_event"
SECURITY_EVENTS_KEPT = 10  # the newest; the metric and the steps' histories hold them all


class SecurityEvent(Model):
    at: datetime
    step: str = Field(description="the step workflow's id")
    activity: str = Field(description="the agent activity whose reply was refused")
    reason: str = Field(description="why: no or a wrong proof of the boot's agent token, ...")
