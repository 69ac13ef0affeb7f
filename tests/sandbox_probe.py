"""A workflow that imports modules inside Temporal's workflow sandbox (nothing passed through but
pydantic) and reports which imported cleanly; tests/test_architecture.py runs it."""

from __future__ import annotations

from temporalio import workflow


@workflow.defn(name="SandboxImportProbe")
class SandboxImportProbe:
    @workflow.run
    async def run(self, modules: list[str]) -> dict[str, str]:
        """module -> "" when it imported inside the sandbox, else the error's type and text."""
        outcome: dict[str, str] = {}
        for name in modules:
            try:
                __import__(name, fromlist=["_"])
                outcome[name] = ""
            except Exception as err:
                outcome[name] = f"{type(err).__name__}: {err}"
        return outcome


@workflow.defn(name="SandboxCallProbe")
class SandboxCallProbe:
    @workflow.run
    async def run(self) -> dict[str, str]:
        """Each non-deterministic call -> the error the sandbox raised ("" if it was let through)."""
        import datetime
        import random
        import time

        calls = {
            "datetime.now": datetime.datetime.now,
            "time.time": time.time,
            "random.random": random.random,
        }
        outcome: dict[str, str] = {}
        for name, call in calls.items():
            try:
                call()
                outcome[name] = ""
            except Exception as err:
                outcome[name] = type(err).__name__
        return outcome
