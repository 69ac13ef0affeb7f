"""The agent's named deploy methods: what metal3's spec.customDeploy.method selects.

metal3 hands the method name to Ironic's agent, whose deploy steps implement it; metalflow's
agent keeps a registry of its own. A method gets the agent and the request and returns what
it wrote (the device the config drive then goes to). An unknown name is a provisioning error
naming the known ones. Add a method: one function and one row in `DEPLOY_METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from metalflow.api.agent import CustomDeployRequest, WriteImageRequest, WriteImageResult
from metalflow.api.errors import ErrorName, permanent

if TYPE_CHECKING:
    from activities.agent import AgentActivities

DeployMethod = Callable[["AgentActivities", CustomDeployRequest], WriteImageResult]


def write_image(agent: AgentActivities, req: CustomDeployRequest) -> WriteImageResult:
    """metal3's default deploy, by name: write spec.image to the root device."""
    if req.image is None:
        raise permanent(
            ErrorName.INVALID_SPEC,
            "spec.customDeploy.method write_image needs spec.image: the image it writes",
        )
    return agent.write_image(
        WriteImageRequest(
            image=req.image, root_device_hints=req.root_device_hints, software_raid=req.software_raid
        )
    )


DEPLOY_METHODS: dict[str, DeployMethod] = {
    "write_image": write_image,
}


def deploy_method(name: str) -> DeployMethod:
    method = DEPLOY_METHODS.get(name)
    if method is None:
        raise permanent(
            ErrorName.UNKNOWN_DEPLOY_METHOD,
            f"spec.customDeploy.method {name!r} is not a deploy method of metalflow's agent; "
            f"known: {', '.join(sorted(DEPLOY_METHODS))}",
        )
    return method
