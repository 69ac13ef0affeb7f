"""`metalflow campaign apply|status|pause|resume|abort`: fleet servicing campaigns from a shell.

`apply FILE --wait` and `status NAME --watch` show the campaign live (phase, wave, per-host rows)
until it ends; the exit code says how it ended (0 Succeeded, 1 otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from metalflow.api.campaign import (
    ABORT_SIGNAL,
    ENDED,
    PAUSE_SIGNAL,
    RESUME_SIGNAL,
    CampaignPhase,
    CampaignStatus,
    HostPhase,
)
from metalflow.client import campaigns
from metalflow.runtime.settings import Settings
from metalflow.runtime.temporal import connect

SIGNALS = {"pause": PAUSE_SIGNAL, "resume": RESUME_SIGNAL, "abort": ABORT_SIGNAL}
console = Console()


def add_parser(sub: Any) -> argparse.ArgumentParser:
    sp: argparse.ArgumentParser = sub.add_parser(
        "campaign", help="roll a firmware change across hosts: apply FILE, or status|pause|resume|abort NAME"
    )
    sp.add_argument("action", choices=("apply", "status", *SIGNALS))
    sp.add_argument("target", help="a Campaign YAML file for apply, the campaign's name otherwise")
    sp.add_argument("-n", "--namespace", default="default")
    sp.add_argument(
        "--wait", "--watch", dest="wait", action="store_true", help="follow it live until it ends"
    )
    sp.set_defaults(run=cmd_campaign)
    return sp


def table(name: str, st: CampaignStatus) -> Table:
    done, failed = st.count(HostPhase.DONE), st.count(HostPhase.FAILED)
    t = Table(
        title=f"campaign {name}: {st.phase.value}, wave {st.wave + 1}/{st.waves}, {done}/{st.total} done, "
        f"{failed} failed" + (f" ({st.message})" if st.message else ""),
        title_justify="left",
    )
    for col in ("HOST", "WAVE", "PHASE", "MESSAGE"):
        t.add_column(col)
    drift = {d.ref.name: "; ".join(d.differences) for d in st.drift}
    if drift:
        t.caption = "drift: " + " | ".join(f"{name}: {what}" for name, what in drift.items())
    for h in st.hosts:
        t.add_row(
            h.ref.name,
            "canary" if h.wave == 0 else str(h.wave) if h.wave > 0 else "-",
            h.phase.value,
            h.message,
        )
    return t


async def cmd_campaign(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect(settings)
    if args.action == "apply":
        campaign = campaigns.load_campaign(Path(args.target))
        await campaigns.apply(client, campaign, settings.task_queue)
        name, namespace = campaign.name, campaign.namespace
        console.print(f"campaign {namespace}/{name} started")
    else:
        name, namespace = args.target, args.namespace
        if args.action in SIGNALS:
            await campaigns.signal(client, namespace, name, SIGNALS[args.action])
            console.print(f"campaign {namespace}/{name}: {args.action} sent")
            return 0
    st = await campaigns.status(client, namespace, name)
    if args.wait:
        with Live(table(name, st), console=console, auto_refresh=False) as live:
            while st.phase not in ENDED:
                await asyncio.sleep(1)
                st = await campaigns.status(client, namespace, name)
                live.update(table(name, st), refresh=True)
    elif args.action != "apply":
        console.print(table(name, st))
    if not args.wait:
        return 0  # started, or shown: how it ends is for --wait to say
    return 0 if st.phase == CampaignPhase.SUCCEEDED else 1
