"""Webhooks and escalation over real HTTP, on both hosts (DESIGN §11, issue 13).

A real aiohttp receiver on 127.0.0.1 (so the bridges run with private targets allowed:
``--allow-private-webhooks`` / ``ALLOW_PRIVATE_WEBHOOKS``), optionally behind a proxy that
drops connections (before and after the receiver saw the request), delays and answers 500.
Every signature is checked with ``standard_webhooks_verify``, written from the Standard
Webhooks spec in tests/test_hooks.py. The local host runs as a real process (kill -9 included);
the Worker runs on the stand-in, whose ``fetch`` really sends. Every request a receiver got
must be an event as the OpenAPI document's ``webhooks`` describes it (the ``receiver`` fixture).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from caisey import wire
from tests.bridge_hosts import BridgeUnderTest, LocalBridgeProcess, ScriptedRuntime, enroll, of_type
from tests.conftest import HOSTS
from tests.openapi_contract import event_problem
from tests.test_hooks import standard_webhooks_verify

RETRY_BASE_MS = 200  # the bridges' webhook backoff base here (5 s in production)


@dataclass
class Seen:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class PostServer:
    """An aiohttp server on 127.0.0.1 that hands every POST to ``handle``."""

    runner: web.AppRunner | None = None
    port: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Receiver(PostServer):
    """An aiohttp server that records every request and answers ``status`` (or hangs ``hang_s``)."""

    status: int = 204
    hang_s: float = 0.0
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(Seen({k.lower(): v for k, v in request.headers.items()}, body))
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        return web.Response(status=self.status)

    def events(self, endpoint_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Distinct events by webhook-id (optionally of one endpoint)."""
        out: dict[str, dict[str, Any]] = {}
        for s in self.seen:
            event = s.event
            if endpoint_id is None or event["data"].get("endpoint_id") == endpoint_id:
                out.setdefault(s.headers["webhook-id"], event)
        return out

    def types(self, endpoint_id: str) -> list[str]:
        return sorted(e["type"] for e in self.events(endpoint_id).values())


@dataclass
class ChaosProxy(PostServer):
    """In front of a receiver: per request, by a seeded PRNG, drop the connection before the
    receiver sees it, forward and then drop the answer (the receiver saw it: a duplicate
    follows), answer 500, delay, or pass. After ``faulty`` requests everything passes."""

    target: Receiver
    rng: random.Random
    faulty: int = 40
    count: int = 0
    actions: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.count += 1
        action = (
            self.rng.choice(["drop", "drop_after", "500", "delay", "pass"]) if self.count <= self.faulty else "pass"
        )
        self.actions.append(action)
        if action == "500":
            return web.Response(status=500)
        if action == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=599)  # never reaches the sender
        if action == "delay":
            await asyncio.sleep(self.rng.uniform(0.2, 1.0))
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower().startswith("webhook-") or k.lower() in ("content-type", "user-agent")
        }
        async with aiohttp.ClientSession() as session, session.post(self.target.url, data=body, headers=headers) as r:
            status = r.status
        if action == "drop_after":
            assert request.transport is not None
            request.transport.close()
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver; afterwards every request it got must be an event the OpenAPI document's
    ``webhooks`` describes (headers and body, tests/openapi_contract.py ``event_problem``)."""
    r = Receiver()
    await r.start()
    yield r
    await r.stop()
    problems = [p for p in (event_problem(s.headers, s.body) for s in r.seen) if p is not None]
    assert not problems, f"{len(problems)} of {len(r.seen)} events are not as documented: {problems[:3]}"


@pytest.fixture(scope="module")
def open_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBridgeProcess]:
    """The local host allowing private targets (the receiver is on 127.0.0.1), short backoff."""
    bridge = LocalBridgeProcess(
        tmp_path_factory.mktemp("hooks") / "data",
        heartbeat_ms=2_000,
        extra_args=["--allow-private-webhooks", "--webhook-retry-base-ms", str(RETRY_BASE_MS)],
    )
    bridge.start()
    yield bridge
    bridge.kill()


@pytest.fixture(scope="module")
def strict_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBridgeProcess]:
    """The local host as deployed: private targets refused."""
    bridge = LocalBridgeProcess(tmp_path_factory.mktemp("strict") / "data", heartbeat_ms=2_000)
    bridge.start()
    yield bridge
    bridge.kill()


def _workers(allow: bool) -> BridgeUnderTest:
    from tests.workers_host import WorkersBridge

    extra = {"ALLOW_PRIVATE_WEBHOOKS": "1", "WEBHOOK_RETRY_BASE_MS": str(RETRY_BASE_MS)} if allow else {}
    return WorkersBridge(extra_vars=extra)


@pytest.fixture(params=HOSTS)
def bridge(request: pytest.FixtureRequest) -> BridgeUnderTest:
    if request.param == "local":
        local: BridgeUnderTest = request.getfixturevalue("open_local")
        return local
    return _workers(allow=True)


@pytest.fixture(params=HOSTS)
def strict(request: pytest.FixtureRequest) -> BridgeUnderTest:
    if request.param == "local":
        local: BridgeUnderTest = request.getfixturevalue("strict_local")
        return local
    return _workers(allow=False)


async def subscribe(bridge: BridgeUnderTest, url: str, events: list[str] | None = None) -> dict[str, Any]:
    r = await bridge.request(
        "POST",
        "/api/webhooks",
        token=bridge.admin_token,
        body={"url": url, "events": events or list(ALL_EVENTS), "description": "PSA"},
    )
    assert r.status == 201, r.body
    return dict(r.body)


ALL_EVENTS = (
    "prompt.created",
    "prompt.delivered",
    "prompt.final",
    "prompt.escalated",
    "endpoint.offline",
    "endpoint.online",
)


async def until(bridge: BridgeUnderTest, done: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Let bridge time pass (and its alarms fire) until ``done()``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await bridge.advance(250)
        await asyncio.sleep(0.02)


async def unsubscribe_all(bridge: BridgeUnderTest) -> None:
    listed = await bridge.request("GET", "/api/webhooks", token=bridge.admin_token)
    for hook in listed.body["webhooks"]:
        await bridge.request("DELETE", f"/api/webhooks/{hook['id']}", token=bridge.admin_token)


def eid() -> str:
    return f"hook-{uuid.uuid4().hex[:10]}"


async def create_prompt(bridge: BridgeUnderTest, endpoint_id: str) -> str:
    created = await bridge.request(
        "POST",
        f"/api/endpoints/{endpoint_id}/prompts",
        token=bridge.admin_token,
        body={"title": "Allow remote control?", "action": "remote_control", "expires_in": 300},
    )
    assert created.status == 201, created.body
    return str(created.body["prompt_id"])


async def prompt_round_trip(bridge: BridgeUnderTest, endpoint_id: str, decision: str = "approve") -> str:
    """Enroll, connect a scripted runtime, create, receipt, decide, disconnect: the prompt id."""
    runtime = ScriptedRuntime(bridge, await enroll(bridge, endpoint_id, "Laptop"))
    await runtime.connect()
    prompt_id = await create_prompt(bridge, endpoint_id)
    delivers = of_type(await runtime.drain(), wire.PromptDeliver)
    assert delivers and {d.prompt.prompt_id for d in delivers} == {prompt_id}  # a retry may have followed
    await runtime.receipt(delivers[0])
    await runtime.decide(prompt_id, decision)
    await runtime.close()
    return prompt_id


# --- both hosts -----------------------------------------------------------------------------------


async def test_every_event_arrives_signed_with_a_stable_shape(bridge: BridgeUnderTest, receiver: Receiver) -> None:
    await unsubscribe_all(bridge)
    hook = await subscribe(bridge, receiver.url)
    assert hook["secret"].startswith("whsec_") and hook["id"].startswith("wh_")
    endpoint_id = eid()
    prompt_id = await prompt_round_trip(bridge, endpoint_id, "deny")
    expected = ["endpoint.offline", "endpoint.online", "prompt.created", "prompt.delivered", "prompt.final"]
    await until(bridge, lambda: receiver.types(endpoint_id) == expected, f"{expected}")
    for seen in receiver.seen:
        assert standard_webhooks_verify(hook["secret"], seen.headers, seen.body)
        assert abs(int(seen.headers["webhook-timestamp"]) - bridge.now_ms() // 1000) < 600
    events = receiver.events(endpoint_id)
    (final,) = [e for e in events.values() if e["type"] == "prompt.final"]
    assert final["data"]["prompt_id"] == prompt_id
    assert final["data"]["state"] == "denied" and final["data"]["decision"] == "deny"
    assert final["data"]["timings"]["delivered_at"] is not None
    (online,) = [e for e in events.values() if e["type"] == "endpoint.online"]
    assert online["data"] == {"endpoint_id": endpoint_id, "label": "Laptop", "online": True, "at": online["data"]["at"]}
    listed = await bridge.request("GET", "/api/webhooks", token=bridge.admin_token)
    assert listed.status == 200
    (entry,) = listed.body["webhooks"]
    assert "secret" not in json.dumps(listed.body) and hook["secret"] not in json.dumps(listed.body)
    assert entry["delivery"]["delivered"] >= 5 and entry["delivery"]["last_outcome"] == "delivered"
    await unsubscribe_all(bridge)


async def test_through_a_proxy_that_drops_delays_and_fails_every_event_arrives(
    bridge: BridgeUnderTest, receiver: Receiver
) -> None:
    await unsubscribe_all(bridge)
    proxy = ChaosProxy(receiver, random.Random(13), faulty=30)
    await proxy.start()
    try:
        hook = await subscribe(bridge, proxy.url)
        endpoints = [eid() for _ in range(3)]
        for endpoint_id in endpoints:
            await prompt_round_trip(bridge, endpoint_id)
        expected = ["endpoint.offline", "endpoint.online", "prompt.created", "prompt.delivered", "prompt.final"]
        await until(
            bridge,
            lambda: all(receiver.types(e) == expected for e in endpoints),
            "every event through the chaos proxy",
            timeout_s=90,
        )
        assert {"drop", "drop_after", "500"} <= set(proxy.actions), proxy.actions
        by_id: dict[str, list[Seen]] = {}
        for seen in receiver.seen:
            assert standard_webhooks_verify(hook["secret"], seen.headers, seen.body)
            by_id.setdefault(seen.headers["webhook-id"], []).append(seen)
        duplicates = [copies for copies in by_id.values() if len(copies) > 1]
        assert duplicates, "a dropped answer after the receiver saw the request must be retried"
        for copies in duplicates:  # a retry is the same event: same id, same body
            assert len({c.body for c in copies}) == 1
    finally:
        await unsubscribe_all(bridge)
        await proxy.stop()


async def test_410_disables_the_subscription(bridge: BridgeUnderTest, receiver: Receiver) -> None:
    await unsubscribe_all(bridge)
    receiver.status = 410
    hook = await subscribe(bridge, receiver.url, ["prompt.created"])
    endpoint_id = eid()
    await enroll(bridge, endpoint_id)
    r = await bridge.request(
        "POST", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token, body={"title": "A", "action": "x"}
    )
    assert r.status == 201

    async def disabled() -> bool:
        listed = await bridge.request("GET", "/api/webhooks", token=bridge.admin_token)
        return not listed.body["webhooks"][0]["enabled"]

    deadline = time.monotonic() + 20
    while not await disabled():
        assert time.monotonic() < deadline, "the subscription was not disabled"
        await bridge.advance(250)
    listed = await bridge.request("GET", "/api/webhooks", token=bridge.admin_token)
    assert listed.body["webhooks"][0]["disabled_reason"] == "the receiver answered 410 Gone"
    seen_before = len(receiver.seen)
    await bridge.request(
        "POST", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token, body={"title": "B", "action": "x"}
    )
    await bridge.advance(2_000)
    await asyncio.sleep(0.3)
    assert len(receiver.seen) == seen_before  # a disabled subscription gets nothing
    test = await bridge.request("POST", f"/api/webhooks/{hook['id']}/test", token=bridge.admin_token)
    assert test.status == 200 and test.body["delivered"] is False and test.body["status"] == 410
    await unsubscribe_all(bridge)


async def test_the_test_route_sends_a_signed_event_and_logs_it(bridge: BridgeUnderTest, receiver: Receiver) -> None:
    await unsubscribe_all(bridge)
    hook = await subscribe(bridge, receiver.url)
    r = await bridge.request("POST", f"/api/webhooks/{hook['id']}/test", token=bridge.admin_token)
    assert r.status == 200, r.body
    assert r.body["delivered"] is True and r.body["status"] == 204
    (seen,) = receiver.seen
    assert seen.event["type"] == "webhook.test" and seen.headers["webhook-id"] == r.body["webhook_id"]
    assert standard_webhooks_verify(hook["secret"], seen.headers, seen.body)
    receiver.status = 500
    r = await bridge.request("POST", f"/api/webhooks/{hook['id']}/test", token=bridge.admin_token)
    assert r.body["delivered"] is False and r.body["status"] == 500 and r.body["error"] == "HTTP 500"
    listed = await bridge.request("GET", "/api/webhooks", token=bridge.admin_token)
    delivery = listed.body["webhooks"][0]["delivery"]
    assert delivery["last_outcome"] == "test_failed" and delivery["last_status"] == 500
    await unsubscribe_all(bridge)


async def test_escalations_fire_webhooks_and_show_on_the_prompt(bridge: BridgeUnderTest, receiver: Receiver) -> None:
    await unsubscribe_all(bridge)
    await subscribe(bridge, receiver.url, ["prompt.escalated"])
    endpoint_id = eid()
    await enroll(bridge, endpoint_id)
    r = await bridge.request(
        "POST",
        f"/api/endpoints/{endpoint_id}/prompts",
        token=bridge.admin_token,
        body={"title": "A", "action": "x", "expires_in": 600, "escalate_after": 5},
    )
    prompt_id = r.body["prompt_id"]
    assert r.body["escalated_at"] is None and r.body["escalations"] == []
    await until(bridge, lambda: len(receiver.events(endpoint_id)) == 1, "the escalation at escalate_after", 30)
    (event,) = receiver.events(endpoint_id).values()
    assert event["data"]["escalation"]["reason"] == "not answered in 5 s" and event["data"]["escalation"]["auto"]
    tech = await bridge.request(
        "POST", "/api/tokens", token=bridge.admin_token, body={"name": f"t{uuid.uuid4().hex[:8]}", "role": "technician"}
    )
    r = await bridge.request(
        "POST",
        f"/api/endpoints/{endpoint_id}/prompts/{prompt_id}/escalate",
        token=tech.body["token"],
        body={"note": "VIP, call them"},
    )
    assert r.status == 200, r.body
    assert [e["by"] for e in r.body["escalations"]] == ["bridge", tech.body["name"]]
    assert any(e["type"] == "escalated" and e["detail"]["note"] == "VIP, call them" for e in r.body["events"])
    await until(bridge, lambda: len(receiver.events(endpoint_id)) == 2, "the manual escalation's webhook")
    await bridge.advance(10_000)
    assert len(receiver.events(endpoint_id)) == 2  # the automatic one fired once
    await unsubscribe_all(bridge)


async def test_failed_to_deliver_escalates_once(bridge: BridgeUnderTest, receiver: Receiver) -> None:
    await unsubscribe_all(bridge)
    await subscribe(bridge, receiver.url, ["prompt.escalated", "prompt.final"])
    endpoint_id = eid()
    await enroll(bridge, endpoint_id)  # its agent never connects
    r = await bridge.request(
        "POST",
        f"/api/endpoints/{endpoint_id}/prompts",
        token=bridge.admin_token,
        body={"title": "A", "action": "x", "expires_in": 5, "escalate_after": 600},
    )
    assert r.status == 201
    await until(bridge, lambda: receiver.types(endpoint_id) == ["prompt.escalated", "prompt.final"], "both events")
    escalated = next(e for e in receiver.events(endpoint_id).values() if e["type"] == "prompt.escalated")
    assert escalated["data"]["state"] == "failed_to_deliver"
    assert escalated["data"]["escalation"]["reason"] == "could not reach endpoint — offline for 5 s, no attempt made"
    await bridge.advance(3_000)
    assert receiver.types(endpoint_id) == ["prompt.escalated", "prompt.final"]  # once
    await unsubscribe_all(bridge)


async def test_the_fleet_default_escalate_after(bridge: BridgeUnderTest) -> None:
    tech = await bridge.request(
        "POST", "/api/tokens", token=bridge.admin_token, body={"name": f"s{uuid.uuid4().hex[:8]}", "role": "technician"}
    )
    refused = await bridge.request("PUT", "/api/settings", token=tech.body["token"], body={"escalate_after": 60})
    assert (refused.status, refused.body["error"]["code"]) == (403, "forbidden")
    for bad in (0, "60", True, 10**9):
        r = await bridge.request("PUT", "/api/settings", token=bridge.admin_token, body={"escalate_after": bad})
        assert (r.status, r.body["error"]["code"]) == (400, "invalid_field"), bad
    r = await bridge.request("PUT", "/api/settings", token=bridge.admin_token, body={})
    assert (r.status, r.body["error"]["code"]) == (400, "missing_field")
    r = await bridge.request("PUT", "/api/settings", token=bridge.admin_token, body={"escalate_after": 5})
    assert r.status == 200 and r.body == {"escalate_after": 5}
    assert (await bridge.request("GET", "/api/settings", token=tech.body["token"])).body == {"escalate_after": 5}
    endpoint_id = eid()
    await enroll(bridge, endpoint_id)
    r = await bridge.request(
        "POST", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token, body={"title": "A", "action": "x"}
    )
    prompt_id = r.body["prompt_id"]
    await bridge.advance(6_000)
    got = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/prompts/{prompt_id}", token=bridge.admin_token)
    assert got.body["escalations"][0]["reason"] == "not answered in 5 s"
    r = await bridge.request("PUT", "/api/settings", token=bridge.admin_token, body={"escalate_after": None})
    assert r.body == {"escalate_after": None}


async def test_subscription_refusals(strict: BridgeUnderTest) -> None:
    bridge = strict
    admin = bridge.admin_token
    tech = await bridge.request(
        "POST", "/api/tokens", token=admin, body={"name": f"r{uuid.uuid4().hex[:8]}", "role": "technician"}
    )

    async def refused(body: Any, status: int, code: str, token: str | None = admin) -> None:
        r = await bridge.request("POST", "/api/webhooks", token=token, body=body)
        assert (r.status, r.body["error"]["code"]) == (status, code), (body, r.status, r.body)

    good = {"url": "https://hooks.example.com/caisey", "events": ["prompt.final"]}
    for url in (
        "https://127.0.0.1/x",
        "https://0x7f.1/",
        "https://[::ffff:10.0.0.1]/",
        "https://169.254.169.254/",
        "https://localhost/",
        "http://hooks.example.com/",
    ):
        await refused(dict(good, url=url), 400, "webhook_target_refused")
    for url in (None, 5, "", "ftp://x.example.com/", "not a url"):
        await refused(
            dict(good, url=url),
            400,
            "invalid_field" if not url or not isinstance(url, str) else "webhook_target_refused",
        )
    for events in (None, [], ["prompt.nope"], "prompt.final", ["prompt.final", "prompt.final"], [5]):
        await refused(dict(good, events=events), 400, "invalid_field")
    await refused(dict(good, description="a\x1bb"), 400, "invalid_field")
    await refused(dict(good, description="x" * 201), 400, "invalid_field")
    await refused(good, 403, "forbidden", token=tech.body["token"])
    await refused(good, 401, "missing_token", token=None)
    await refused(good, 401, "invalid_token", token="cst_nope")
    for method, path in (
        ("GET", "/api/webhooks"),
        ("DELETE", "/api/webhooks/wh_x"),
        ("POST", "/api/webhooks/wh_x/test"),
    ):
        r = await bridge.request(method, path, token=tech.body["token"])
        assert (r.status, r.body["error"]["code"]) == (403, "forbidden")
    for path in ("/api/webhooks/wh_unknown", "/api/webhooks/..", "/api/webhooks/x%00y"):
        r = await bridge.request("DELETE", path, token=admin)
        assert r.status in (404,) and r.body["error"]["code"] in ("unknown_webhook", "not_found"), (path, r.body)
    r = await bridge.request("POST", "/api/webhooks/wh_unknown/test", token=admin)
    assert (r.status, r.body["error"]["code"]) == (404, "unknown_webhook")
    r = await bridge.request("PUT", "/api/webhooks", token=admin, body=good)
    assert r.status == 405
    r = await bridge.request("POST", "/api/webhooks", token=admin, raw=b"[1]")
    assert (r.status, r.body["error"]["code"]) == (400, "malformed_json")
    ok = await bridge.request("POST", "/api/webhooks", token=admin, body=good)
    assert ok.status == 201
    r = await bridge.request("DELETE", f"/api/webhooks/{ok.body['id']}", token=admin)
    assert r.status == 200 and r.body == {"id": ok.body["id"], "deleted": True}
    r = await bridge.request("DELETE", f"/api/webhooks/{ok.body['id']}", token=admin)
    assert (r.status, r.body["error"]["code"]) == (404, "unknown_webhook")


# --- the local host as a process ----------------------------------------------------------------


async def test_kill_9_mid_retry_loses_nothing(tmp_path: Path, receiver: Receiver) -> None:
    bridge = LocalBridgeProcess(
        tmp_path / "data",
        heartbeat_ms=2_000,
        extra_args=["--allow-private-webhooks", "--webhook-retry-base-ms", "500"],
    )
    bridge.start()
    try:
        receiver.status = 503
        await subscribe(bridge, receiver.url, ["prompt.created", "prompt.escalated"])
        endpoint_id = eid()
        await enroll(bridge, endpoint_id)
        ids = []
        for i in range(5):
            r = await bridge.request(
                "POST",
                f"/api/endpoints/{endpoint_id}/prompts",
                token=bridge.admin_token,
                body={"title": f"P{i}", "action": "x", "expires_in": 600},
            )
            ids.append(r.body["prompt_id"])
        await until(bridge, lambda: len(receiver.events(endpoint_id)) == 5, "first attempts (answered 503)")
        bridge.kill()  # kill -9 while every delivery waits for its retry
        failed_ids = set(receiver.events(endpoint_id))
        receiver.status = 200
        mark = len(receiver.seen)
        bridge.start()
        await until(
            bridge,
            lambda: failed_ids <= {s.headers["webhook-id"] for s in receiver.seen[mark:]},
            "every event retried, under its own id, after the restart",
        )
        created = sorted(e["data"]["prompt_id"] for e in receiver.events(endpoint_id).values())
        assert created == sorted(ids)
        deadline = time.monotonic() + 10
        while True:  # the outcomes reach the delivery log once the answers are back
            listed = await bridge.request("GET", "/api/webhooks", token=bridge.admin_token)
            if listed.body["webhooks"][0]["delivery"]["delivered"] >= 5:
                break
            assert time.monotonic() < deadline, listed.body
            await asyncio.sleep(0.1)
    finally:
        bridge.kill()


async def test_kill_9_during_an_attempt_in_flight_loses_nothing(tmp_path: Path) -> None:
    """The attempt was handed out (counted, leased) and the receiver holds it when the bridge
    dies: once the lease lapses the restarted bridge sends it again, under the same id."""
    receiver = Receiver(hang_s=60)
    await receiver.start()
    bridge = LocalBridgeProcess(tmp_path / "data", heartbeat_ms=2_000, extra_args=["--allow-private-webhooks"])
    bridge.start()
    try:
        await subscribe(bridge, receiver.url, ["prompt.created"])
        endpoint_id = eid()
        await enroll(bridge, endpoint_id)
        r = await bridge.request(
            "POST",
            f"/api/endpoints/{endpoint_id}/prompts",
            token=bridge.admin_token,
            body={"title": "A", "action": "x"},
        )
        await until(bridge, lambda: len(receiver.seen) == 1, "the attempt to reach the hanging receiver")
        bridge.kill()
        (webhook_id,) = receiver.events(endpoint_id)
        receiver.hang_s = 0
        bridge.start()
        await until(bridge, lambda: len(receiver.seen) >= 2, "the attempt again after the lease", timeout_s=40)
        assert receiver.seen[-1].headers["webhook-id"] == webhook_id
        assert receiver.seen[-1].body == receiver.seen[0].body
        assert receiver.seen[-1].event["data"]["prompt_id"] == r.body["prompt_id"]
    finally:
        bridge.kill()
        await receiver.stop()


async def test_a_receiver_that_hangs_30_s_does_not_delay_prompt_handling(open_local: LocalBridgeProcess) -> None:
    bridge = open_local
    hanging = Receiver(hang_s=30)
    await hanging.start()
    try:
        await unsubscribe_all(bridge)
        await subscribe(bridge, hanging.url)
        endpoint_id = eid()
        runtime = ScriptedRuntime(bridge, await enroll(bridge, endpoint_id))
        await runtime.connect()
        await until(bridge, lambda: len(hanging.seen) >= 1, "the hanging receiver to be reached")
        round_trips = []
        for i in range(5):
            started = time.monotonic()
            created = await bridge.request(
                "POST",
                f"/api/endpoints/{endpoint_id}/prompts",
                token=bridge.admin_token,
                body={"title": f"P{i}", "action": "x"},
            )
            assert created.status == 201
            deliver = wire.decode(await runtime.socket.recv(timeout=5))  # type: ignore[union-attr]
            assert isinstance(deliver, wire.PromptDeliver)
            await runtime.receipt(deliver)
            got = await bridge.request(
                "GET", f"/api/endpoints/{endpoint_id}/prompts/{created.body['prompt_id']}", token=bridge.admin_token
            )
            assert got.body["state"] == "delivered"
            round_trips.append(time.monotonic() - started)
        assert len(hanging.seen) >= 2  # the sends were in flight, hanging, meanwhile
        assert max(round_trips) < 2.0, round_trips
        await runtime.close()
    finally:
        await unsubscribe_all(bridge)
        await hanging.stop()


async def test_the_hanging_receiver_bench_runs(tmp_path: Path) -> None:
    """``python -m bench.webhook_hang`` at a tiny size: both phases measured in one run, the
    receiver really held requests meanwhile (the figures themselves are in README)."""
    from bench.webhook_hang import run

    result = await run(tmp_path, prompts=5)
    assert result["baseline"]["n"] == result["answering_receiver"]["n"] == result["hanging_receiver"]["n"] == 5
    assert result["receiver_requests_during_hanging_phase"] >= 5
    assert result["hanging_receiver"]["max_ms"] < 5_000  # no round trip waited for the receiver


async def test_a_new_subscription_hears_the_next_event_at_once_on_the_local_host(
    open_local: LocalBridgeProcess, receiver: Receiver
) -> None:
    """The local host tells each actor whether anyone listens (``Hooks.listening``): an
    endpoint that connected while nobody listened keeps no ``endpoint.online`` event and wakes
    no alarm for it, and a subscription made afterwards hears that endpoint's very next event —
    not after the ``NO_TARGETS_TTL_MS`` (60 s) memo a Worker keeps to spare the fleet object."""
    bridge = open_local
    await unsubscribe_all(bridge)
    endpoint_id = eid()
    runtime = ScriptedRuntime(bridge, await enroll(bridge, endpoint_id, "Laptop"))
    await runtime.connect()  # endpoint.online while nobody listens: nothing kept
    await bridge.advance(1_000)  # (an alarm, had one been due, has run by now)
    await subscribe(bridge, receiver.url)
    try:
        await create_prompt(bridge, endpoint_id)
        await until(bridge, lambda: "prompt.created" in receiver.types(endpoint_id), "prompt.created", timeout_s=10)
        assert "endpoint.online" not in receiver.types(endpoint_id)  # it happened before anyone listened
        await runtime.close()
    finally:
        await unsubscribe_all(bridge)
