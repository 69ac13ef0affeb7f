"""The test bed's sushy-emulator with a shortened power delay (testbed/sushy.py).

The suite's emulated fleets run the real emulator with its fake driver's power delay drawn from
1-2 s instead of 1-11 s (METALFLOW_TESTBED_POWER_DELAY, tests/conftest.py); the BMC-activity
tests' emulator (fixtures/sushy.py) keeps the emulator's own."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from testbed.sushy import POWER_DELAY_ENV, FakeSystem, power_delay_from_env, start_sushy

SYSTEM = FakeSystem("0f2b2e1c-0000-4000-8000-0000000000d1", "delay", "52:54:00:aa:00:d1")


@pytest.mark.parametrize("value", ["2", "a-b", "0-2", "3-1", "1-"])
def test_a_bad_power_delay_names_the_variable_and_the_form(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(POWER_DELAY_ENV, value)
    with pytest.raises(ValueError, match=rf'{POWER_DELAY_ENV}=.*want "LO-HI"'):
        power_delay_from_env()


def test_power_delay_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POWER_DELAY_ENV, "1-2")
    assert power_delay_from_env() == (1, 2)
    monkeypatch.delenv(POWER_DELAY_ENV)
    assert power_delay_from_env() is None  # the emulator's own 1-11 s


def test_power_changes_land_within_the_shortened_delay(tmp_path: Path) -> None:
    """Three power changes with the delay drawn from 1..1 land within a few seconds each (with
    the emulator's 1..11, all three that quick happens about once in a hundred runs)."""
    emu = start_sushy(tmp_path, [SYSTEM], "admin", "pw", power_delay=(1, 1))
    try:
        url, auth = emu.system_url(SYSTEM.uuid), ("admin", "pw")
        took = []
        for reset, state in (("On", "On"), ("ForceOff", "Off"), ("On", "On")):
            started = time.monotonic()
            requests.post(
                f"{url}/Actions/ComputerSystem.Reset", json={"ResetType": reset}, auth=auth, timeout=10
            ).raise_for_status()
            while requests.get(url, auth=auth, timeout=10).json()["PowerState"] != state:
                assert time.monotonic() - started < 30, f"{reset} never applied"
                time.sleep(0.05)
            took.append(time.monotonic() - started)
        assert max(took) < 4, took
    finally:
        emu.stop()
