"""What idle endpoints and technician calls cost on Cloudflare (issue 12): a cost model fed by
the Workers stand-in.

workerd cannot run here (it downloads its Python runtime), so the counts come from running
``worker/entry.py`` on ``tests/workers_standin`` with a real ``AgentCore`` on the virtual
clock: one endpoint, connected and idle for an hour, counted as the runtime would bill it —
each handler the runtime runs (a "wake": a WebSocket message, an alarm, a request from the
Worker or from the endpoint's object to the fleet object) and each frame the runtime answers
itself (auto-response). Handler time is measured here, on CPython; workerd observed about
7.5 ms of CPU per heartbeat wake (docs/WORKERS_RUNTIME.md), shown beside it.

Two agents are compared on today's code: one that sends a full heartbeat every 15 s (every
agent before this change; agents installed before it still do — "before") and one that pings
between full heartbeats every 6 min ("after"). And technician calls: Python invocations per
call with the Worker's token cache off ("before") and warm ("after").

    python -m bench.do_cost [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

# --- prices: Workers Paid, Durable Objects (read 2026-11-30) ------------------------------------
# https://developers.cloudflare.com/durable-objects/platform/pricing/ — requests $0.15 per
# million (1 million included a month), duration $12.50 per million GB-s (400,000 GB-s included),
# billed while an object runs or is idle but cannot hibernate, at 128 MB per object; requests
# include HTTP requests, RPC sessions, WebSocket messages and alarm invocations.
# https://developers.cloudflare.com/durable-objects/platform/changelog/ (2024-04-01): incoming
# WebSocket messages are billed 20:1. The page does not say whether a message the runtime
# auto-responds to counts: this model counts it (the pessimistic reading).
PRICES_AS_OF = "2026-11-30"
PRICES_SOURCE = "developers.cloudflare.com/durable-objects/platform/pricing (Workers Paid)"
USD_PER_MILLION_REQUESTS = 0.15
USD_PER_MILLION_GB_S = 12.50
WS_MESSAGES_PER_REQUEST = 20
OBJECT_GB = 128 / 1024
WORKERD_MS_PER_WAKE = 7.5  # CPU per heartbeat wake observed in workerd (WORKERS_RUNTIME.md)
ENDPOINTS = 10_000
HOURS_PER_MONTH = 730
HOUR_MS = 3_600_000
MONTH_S = HOURS_PER_MONTH * 3600


async def idle_hour(state_dir: Path, *, old: bool) -> dict[str, Any]:
    """One endpoint connected and idle for an hour (after 10 min of settling)."""
    from tests.bridge_hosts import enroll
    from tests.workers_host import RealAgent, WorkersBridge

    bridge = WorkersBridge(heartbeat_ms=None)  # the deployment's defaults
    endpoint = await enroll(bridge, "idle-1")
    agent = RealAgent(bridge, endpoint, state_dir, old=old)
    await agent.connect()
    await agent.run(10 * 60_000)
    ep = bridge.harness.record("ENDPOINTS", "idle-1")
    fleet = bridge.harness.record("FLEET", "fleet")
    before = (dict(ep.wakes_by_handler), ep.handler_s, ep.auto_responses, fleet.wakes, fleet.handler_s)
    await agent.run(HOUR_MS)
    assert agent.socket is not None and not agent.socket.closed
    by_handler = {k: v - before[0].get(k, 0) for k, v in ep.wakes_by_handler.items() if v - before[0].get(k, 0)}
    return {
        "agent": "full heartbeat every 15 s" if old else "ping every 15 s, full heartbeat every 6 min",
        "endpoint_wakes": sum(by_handler.values()),
        "endpoint_wakes_by_handler": by_handler,
        "endpoint_handler_s": ep.handler_s - before[1],
        "auto_responses": ep.auto_responses - before[2],
        "fleet_wakes": fleet.wakes - before[3],
        "fleet_handler_s": fleet.handler_s - before[4],
    }


def monthly(hour: dict[str, Any], ms_per_wake: float | None = None) -> dict[str, float]:
    """Requests, GB-s and dollars a month for ``ENDPOINTS`` endpoints idle like ``hour``.
    ``ms_per_wake``: price each wake at this handler time instead of the measured one."""
    messages = hour["endpoint_wakes_by_handler"].get("webSocketMessage", 0) + hour["auto_responses"]
    other = hour["endpoint_wakes"] - hour["endpoint_wakes_by_handler"].get("webSocketMessage", 0)
    requests_per_hour = messages / WS_MESSAGES_PER_REQUEST + other + hour["fleet_wakes"]
    if ms_per_wake is None:
        endpoint_s, fleet_s = hour["endpoint_handler_s"], hour["fleet_handler_s"]
    else:
        endpoint_s = hour["endpoint_wakes"] * ms_per_wake / 1000
        fleet_s = hour["fleet_wakes"] * ms_per_wake / 1000
    scale = ENDPOINTS * HOURS_PER_MONTH
    # One fleet object serves every endpoint: it cannot be active for more than the month.
    gb_s = (endpoint_s * scale + min(fleet_s * scale, MONTH_S)) * OBJECT_GB
    requests = requests_per_hour * scale
    usd_requests = requests / 1e6 * USD_PER_MILLION_REQUESTS
    usd_duration = gb_s / 1e6 * USD_PER_MILLION_GB_S
    return {
        "requests": requests,
        "gb_s": gb_s,
        "usd_requests": usd_requests,
        "usd_duration": usd_duration,
        "usd": usd_requests + usd_duration,
    }


async def invocations_per_call() -> dict[str, dict[str, int]]:
    """Python invocations (Worker + object handlers) per technician call, cache off and warm."""
    from tests.bridge_hosts import enroll
    from tests.workers_host import ADMIN_TOKEN, WorkersBridge

    out: dict[str, dict[str, int]] = {}
    for label, cache_ms in (("before", 0), ("after", 60_000)):
        bridge = WorkersBridge(heartbeat_ms=None)
        setattr(bridge.harness.module, "TOKEN_CACHE_MS", cache_ms)  # noqa: B010 — the module is loaded at run time
        await enroll(bridge, "calls-1")
        r = await bridge.request("POST", "/api/tokens", token=ADMIN_TOKEN, body={"name": "tina", "role": "technician"})
        token = r.body["token"]
        base = "/api/endpoints/calls-1/prompts"
        body = {"title": "Allow?", "action": "remote_control", "expires_in": 600}
        created = await bridge.request("POST", base, token=token, body=body)  # warms the cache
        calls = {
            "list prompts": ("GET", base, None),
            "get a prompt": ("GET", f"{base}/{created.body['prompt_id']}", None),
            "create a prompt": ("POST", base, body),
            "fleet": ("GET", "/api/endpoints", None),
        }
        counts = {}
        for name, (method, path, payload) in calls.items():
            n0 = bridge.harness.python_invocations
            r = await bridge.request(method, path, token=token, body=payload)
            assert r.status < 300, r.body
            counts[name] = bridge.harness.python_invocations - n0
        out[label] = counts
    return out


async def measure() -> dict[str, Any]:
    hours = {}
    for label, old in (("before", True), ("after", False)):
        with tempfile.TemporaryDirectory(prefix="caisey-docost-") as d:
            hours[label] = await idle_hour(Path(d), old=old)
    return {
        "prices": {
            "as_of": PRICES_AS_OF,
            "source": PRICES_SOURCE,
            "usd_per_million_requests": USD_PER_MILLION_REQUESTS,
            "usd_per_million_gb_s": USD_PER_MILLION_GB_S,
            "ws_messages_per_request": WS_MESSAGES_PER_REQUEST,
            "object_gb": OBJECT_GB,
        },
        "idle_hour": hours,
        "month_per_10k": {k: monthly(v) for k, v in hours.items()},
        "month_per_10k_at_workerd_ms": {k: monthly(v, WORKERD_MS_PER_WAKE) for k, v in hours.items()},
        "invocations_per_call": await invocations_per_call(),
    }


def render_markdown(r: dict[str, Any]) -> str:
    p, h, m, w, inv = (
        r["prices"],
        r["idle_hour"],
        r["month_per_10k"],
        r["month_per_10k_at_workerd_ms"],
        r["invocations_per_call"],
    )
    lines = [
        f"Prices: Workers Paid, {p['source']}, as of {p['as_of']}: ${p['usd_per_million_requests']} per million "
        f"requests, ${p['usd_per_million_gb_s']} per million GB-s at 128 MB per object, incoming WebSocket "
        f"messages {p['ws_messages_per_request']}:1 (auto-responded pings counted too); before the plan's "
        "included 1 million requests and 400,000 GB-s.",
        "",
        "| per idle connected endpoint, one hour | before | after |",
        "|---|---|---|",
        f"| agent | {h['before']['agent']} | {h['after']['agent']} |",
        f"| endpoint object wakes | {h['before']['endpoint_wakes']} | {h['after']['endpoint_wakes']} |",
        "| by handler | "
        + " | ".join(
            ", ".join(f"{k} {v}" for k, v in sorted(h[x]["endpoint_wakes_by_handler"].items()))
            for x in ("before", "after")
        )
        + " |",
        f"| pings answered by the runtime | {h['before']['auto_responses']} | {h['after']['auto_responses']} |",
        f"| fleet object requests (line pushes) | {h['before']['fleet_wakes']} | {h['after']['fleet_wakes']} |",
        "| handler time, endpoint + fleet (stand-in, CPython) | "
        + " | ".join(
            f"{(h[x]['endpoint_handler_s'] + h[x]['fleet_handler_s']) * 1000:.0f} ms" for x in ("before", "after")
        )
        + " |",
        "",
        f"| per {ENDPOINTS:,} idle endpoints, a month ({HOURS_PER_MONTH} h) | before | after |",
        "|---|---|---|",
        f"| Durable Object requests (billed) | {m['before']['requests'] / 1e6:,.1f} M | "
        f"{m['after']['requests'] / 1e6:,.1f} M |",
        f"| duration, handler time measured here | {m['before']['gb_s']:,.0f} GB-s | {m['after']['gb_s']:,.0f} GB-s |",
        f"| cost, handler time measured here | ${m['before']['usd']:,.2f} (requests ${m['before']['usd_requests']:,.2f}"
        f" + duration ${m['before']['usd_duration']:,.2f}) | ${m['after']['usd']:,.2f} (requests "
        f"${m['after']['usd_requests']:,.2f} + duration ${m['after']['usd_duration']:,.2f}) |",
        f"| cost, {WORKERD_MS_PER_WAKE} ms per wake (workerd) | ${w['before']['usd']:,.2f} (duration "
        f"{w['before']['gb_s']:,.0f} GB-s) | ${w['after']['usd']:,.2f} (duration {w['after']['gb_s']:,.0f} GB-s) |",
        "",
        "| Python invocations per technician call | before (no token cache) | after (cache warm) |",
        "|---|---|---|",
    ]
    for name in inv["before"]:
        lines.append(f"| {name} | {inv['before'][name]} | {inv['after'][name]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.do_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the RESULTS.md tables, not JSON")
    args = parser.parse_args(argv)
    result = asyncio.run(measure())
    print(render_markdown(result) if args.markdown else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
