"""Search attributes that let operators filter hosts in the Temporal UI and CLI.

The dev server registers them at start (`temporal server start-dev --search-attribute ...`);
a production namespace gets them once with `temporal operator search-attribute create`.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

HOST_NAME = SearchAttributeKey.for_keyword("HostName")
HOST_NAMESPACE = SearchAttributeKey.for_keyword("HostNamespace")
HOST_STATE = SearchAttributeKey.for_keyword("HostState")
BMC_ADDRESS = SearchAttributeKey.for_keyword("BMCAddress")
IMAGE_URL = SearchAttributeKey.for_keyword("ImageURL")
ERROR_TYPE = SearchAttributeKey.for_keyword("ErrorType")
OPERATIONAL_STATUS = SearchAttributeKey.for_keyword("OperationalStatus")
CAMPAIGN_PHASE = SearchAttributeKey.for_keyword("CampaignPhase")  # a servicing campaign's phase

ALL: tuple[SearchAttributeKey[str], ...] = (
    HOST_NAME,
    HOST_NAMESPACE,
    HOST_STATE,
    BMC_ADDRESS,
    IMAGE_URL,
    ERROR_TYPE,
    OPERATIONAL_STATUS,
    CAMPAIGN_PHASE,
)


def dev_server_args() -> list[str]:
    """`--search-attribute Name=Keyword` flags for `temporal server start-dev`."""
    args: list[str] = []
    for key in ALL:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args
