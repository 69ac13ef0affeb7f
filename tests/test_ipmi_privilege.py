"""?privilegelevel= in an IPMI address reaches the BMC session: against the test bed's IPMI BMC
(pyghmi's server over real RMCP+ on loopback), which reports the level the session holds (Get
Session Info) and, like a real BMC, refuses chassis control below Operator."""

from __future__ import annotations

import pytest
from fixtures.ipmi import PASSWORD, USERNAME
from temporalio.exceptions import ApplicationError

from activities.bmc import ipmi
from activities.bmc.driver import Credentials
from activities.bmc.ipmi import IPMIDriver
from metalflow.api.bmc import PowerAction
from metalflow.api.bmc_address import parse_bmc_address
from testbed.ipmi import IpmiBmc

CREDS = Credentials(USERNAME, PASSWORD, "1", "Secret test/bmc")
GET_SESSION_INFO = {"netfn": 0x06, "command": 0x3D, "data": [0x00]}  # 00h: this session


def session_level(address: str) -> int:
    """The privilege level the BMC says this address's session holds."""
    addr = parse_bmc_address(address)
    with ipmi.session(addr, USERNAME, PASSWORD, CREDS.secret) as cmd:
        rsp = cmd.raw_command(**GET_SESSION_INFO)
    assert rsp.get("code", 0) == 0, rsp
    return int(rsp["data"][4]) & 0x0F


def test_the_session_holds_the_addressed_level(ipmi_bmc: IpmiBmc) -> None:
    assert session_level(ipmi_bmc.address) == 4, "no query: ADMINISTRATOR, as upstream and Ironic"
    assert session_level(ipmi_bmc.address + "?privilegelevel=OPERATOR") == 3
    assert session_level(ipmi_bmc.address + "?privilegelevel=USER") == 2
    assert session_level(ipmi_bmc.address + "?privilegelevel=ADMINISTRATOR") == 4


def test_a_user_level_session_cannot_power_on_and_says_why(ipmi_bmc: IpmiBmc) -> None:
    admin = IPMIDriver(parse_bmc_address(ipmi_bmc.address), CREDS)
    admin.power(PowerAction.OFF, wait_seconds=10)
    user = IPMIDriver(parse_bmc_address(ipmi_bmc.address + "?privilegelevel=USER"), CREDS)
    assert user.validate().powered_on is False, "a User session may read the power state"
    with pytest.raises(ApplicationError) as err:
        user.power(PowerAction.ON, wait_seconds=10)
    assert err.value.type == "BMCAuthError" and err.value.non_retryable
    assert "privilege level USER" in err.value.message and "?privilegelevel=" in err.value.message
    assert PASSWORD not in err.value.message
    assert admin.validate().powered_on is False, "the refused power-on changed nothing"
    operator = IPMIDriver(parse_bmc_address(ipmi_bmc.address + "?privilegelevel=OPERATOR"), CREDS)
    assert operator.power(PowerAction.ON, wait_seconds=10).powered_on
    assert admin.power(PowerAction.OFF, wait_seconds=10).powered_on is False
