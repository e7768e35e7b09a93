"""Outbound events and escalation behind the actor (``worker.hooks``, DESIGN §11): no event
loop, a manual clock, the actor on an in-memory SQLite store. The hosts' delivery over real
HTTP is tests/test_webhooks.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from typing import Any

import pytest

from caisey import wire
from caisey.audit import verify_export
from caisey.ids import IdSource
from worker import webhooks
from worker.api import ROLE_HEADER, TECHNICIAN_HEADER, ApiRequest
from worker.ed25519_local import verified
from worker.endpoint import BridgeConfig, EndpointBridge
from worker.hooks import DEFAULT_ESCALATE_HEADER
from worker.host import Effects, Entropy
from worker.sqlite_store import SqliteStore

ENDPOINT = "ep-hooks"
TECH = {TECHNICIAN_HEADER: "tech", ROLE_HEADER: "technician"}
SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
ALL = list(webhooks.EVENT_TYPES)
TARGETS = [{"id": "wh_a", "url": "https://hooks.example.com/in", "events": ALL, "secret": SECRET}]


def standard_webhooks_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """A verifier written from the Standard Webhooks spec, independently of ``worker.webhooks``:
    the key is the base64 part of ``whsec_…``; the signed content is ``id.timestamp.body``;
    the header holds space-separated ``v1,<base64>`` signatures, any of which may match."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = headers["webhook-id"].encode() + b"." + headers["webhook-timestamp"].encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, sig = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


def test_signature_matches_the_standard_webhooks_example() -> None:
    """The spec's published example (standard-webhooks, spec/standard-webhooks.md)."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    sig = webhooks.signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = webhooks.headers(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330_000, body)
    assert standard_webhooks_verify(secret, headers, body)
    assert not standard_webhooks_verify(secret, headers, body + b" ")
    assert not standard_webhooks_verify("whsec_" + base64.b64encode(b"x" * 24).decode(), headers, body)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/",
        "https://127.1/",
        "https://0x7f.0.0.1/",
        "https://0x7f000001/",
        "https://2130706433/",
        "https://0177.0.0.1/",
        "https://0/",
        "https://10.0.0.8/",
        "https://172.16.5.4/",
        "https://192.168.1.1/",
        "https://100.64.0.1/",
        "https://169.254.169.254/latest/meta-data",
        "https://224.0.0.1/",
        "https://255.255.255.255/",
        "https://[::1]/",
        "https://[::]/",
        "https://[fe80::1]/",
        "https://[fc00::1]/",
        "https://[fd12:3456::1]/",
        "https://[ff02::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[::ffff:a00:1]/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://[2002:c0a8:101::]/",
        "https://[64:ff9b:1::a00:1]/",  # local-use NAT64 (RFC 8215) embedding 10.0.0.1
        "https://[::ffff:0:7f00:1]/",  # SIIT IPv4-translated 127.0.0.1
        "https://[fec0::1]/",  # deprecated site-local
        "https://localhost/",
        "https://LOCALHOST./",
        "https://api.localhost/",
        "https://intranet/",
    ],
)
def test_private_and_local_targets_are_refused(url: str) -> None:
    assert webhooks.target_problem(url, allow_private=False) is not None
    assert webhooks.target_problem(url, allow_private=True) is None


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "ftp://example.com/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://example.com/",  # https required unless private targets are allowed
        "https://user:pw@example.com/",
        "https://example.com@127.0.0.1/",
        "https://%31%32%37.0.0.1/",
        "https://exämple.com/",
        "https://example.com/\n",
        "https://1.2.3.4.5/",
        "https://999.1.1.1/",
        "https://[::1%25eth0]/",
        "https://example.com:99999/",
        "https://" + "a" * 2001 + ".com/",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    assert webhooks.target_problem(url, allow_private=False) is not None


@pytest.mark.parametrize("url", ["https://hooks.example.com/caisey", "https://8.8.8.8/x", "https://[2606:4700::1111]/"])
def test_public_https_targets_are_taken(url: str) -> None:
    assert webhooks.target_problem(url, allow_private=False) is None


def test_retry_schedule_is_full_jitter_exponential_and_capped() -> None:
    base, cap = webhooks.RETRY_BASE_MS, webhooks.RETRY_CAP_MS
    assert webhooks.retry_delay_ms(1, 0.0) == 1
    assert webhooks.retry_delay_ms(1, 0.999) < base
    assert 2 * base < webhooks.retry_delay_ms(3, 0.999) < 4 * base
    assert webhooks.retry_delay_ms(500, 0.999) <= cap
    assert webhooks.LEASE_MS > webhooks.ATTEMPT_TIMEOUT_MS  # an attempt in flight is never handed out twice
    assert webhooks.duration_words(600_000) == "10 min"
    assert webhooks.duration_words(45_000) == "45 s"


# --- the actor ------------------------------------------------------------------------------------


class Rig:
    def __init__(self, *, webhooks_on: bool = True) -> None:
        self.now = 1_800_000_000_000
        self.actor = EndpointBridge(
            SqliteStore(":memory:"), Entropy(random.Random(3)), BridgeConfig(webhooks=webhooks_on)
        )
        self.ids = IdSource(random.Random(4).getrandbits)
        self.connected = False
        self.effects: list[Effects] = []
        token = self.api("POST", "/api/enrollments", {"endpoint_id": ENDPOINT, "label": "L"})[1]
        assert self.api("POST", "/api/agent/enroll", {"enrollment_token": token["enrollment_token"]})[0] == 200

    def api(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        raw = json.dumps(body).encode() if body is not None else b""
        req = ApiRequest(method, path, {**TECH, **(headers or {}), "x-caisey-endpoint": ENDPOINT}, raw)
        response, effects = self.actor.handle(req, self.now, self.connected)
        self.effects.append(effects)
        return response.status, response.body

    def create(self, **fields: Any) -> str:
        status, body = self.api(
            "POST", f"/api/endpoints/{ENDPOINT}/prompts", {"title": "Allow?", "action": "remote_control", **fields}
        )
        assert status == 201, body
        return str(body["prompt_id"])

    def prompt(self, prompt_id: str) -> dict[str, Any]:
        status, body = self.api("GET", f"/api/endpoints/{ENDPOINT}/prompts/{prompt_id}")
        assert status == 200
        return dict(body)

    def alarm(self, targets: list[dict[str, Any]] | None = TARGETS) -> Effects:
        effects = self.actor.alarm(self.now, self.connected, targets=targets)
        self.effects.append(effects)
        if effects.close_agent is not None:  # the agent went silent: the host closes its socket
            self.connected = False
            self.effects.append(self.actor.agent_closed(self.now, False))
        return effects

    def run_until(self, until_ms: int, answer: dict[str, Any] | None = None) -> list[Effects]:
        """Fire the alarm at each time it asks for, up to ``until_ms``; with ``answer``, each
        attempt's result (``{status, error}``) is fed back at once, as a host does."""
        fired = []
        while True:
            at = self.actor.next_alarm_ms(self.now, self.connected)
            if at is None or at > until_ms:
                break
            self.now = max(self.now, at)
            effects = self.alarm()
            fired.append(effects)
            for send in effects.webhooks if answer is not None else ():
                fired.append(self.actor.webhook_results([dict(send, **answer)], self.now, self.connected))
        self.now = until_ms
        return fired

    def connect(self) -> list[str]:
        self.connected = True
        self.actor.agent_opened(self.now)
        return self.frame(wire.Hello(self.ids.new(self.now), ENDPOINT, "test", self.now))

    def frame(self, message: wire.Message) -> list[str]:
        raw = wire.encode(message)
        effects = self.actor.agent_frame(raw, self.now, verified(self.actor.signature_claims(raw)))
        self.effects.append(effects)
        return effects.send

    def sends(self) -> list[dict[str, Any]]:
        return [s for e in self.effects for s in e.webhooks]

    def types(self) -> list[str]:
        """The event types sent, once per event (a retry reuses its event's id)."""
        seen: dict[str, str] = {}
        for send in self.sends():
            seen.setdefault(send["event_id"], json.loads(send["body"])["type"])
        return list(seen.values())


def escalations(rig: Rig, prompt_id: str) -> list[dict[str, Any]]:
    return [e for e in rig.prompt(prompt_id)["events"] if e["type"] == "escalated"]


def test_an_unanswered_prompt_escalates_once_at_escalate_after() -> None:
    rig = Rig()
    prompt_id = rig.create(expires_in=3600, escalate_after=600)
    assert rig.prompt(prompt_id)["escalated_at"] is None
    rig.run_until(rig.now + 599_000)
    assert escalations(rig, prompt_id) == []
    rig.run_until(rig.now + 2_000)
    (event,) = escalations(rig, prompt_id)
    assert event["source"] == "bridge"
    assert event["detail"] == {"by": "bridge", "reason": "not answered in 10 min", "note": None, "auto": True}
    view = rig.prompt(prompt_id)
    assert view["escalated_at"] is not None and len(view["escalations"]) == 1
    rig.run_until(rig.now + 3_000_000)  # expiry and beyond: never again
    assert len(escalations(rig, prompt_id)) == 1
    assert rig.types().count("prompt.escalated") == 1
    sent = next(s for s in rig.sends() if json.loads(s["body"])["type"] == "prompt.escalated")
    data = json.loads(sent["body"])["data"]
    assert data["prompt_id"] == prompt_id and data["escalation"]["reason"] == "not answered in 10 min"


def test_a_decided_prompt_does_not_escalate() -> None:
    rig = Rig()
    deliver_frames = rig.connect()
    prompt_id = rig.create(expires_in=3600, escalate_after=60)
    deliver = next(wire.decode(f) for e in rig.effects for f in e.send if '"prompt.deliver"' in f)
    assert isinstance(deliver, wire.PromptDeliver), deliver_frames
    rig.frame(wire.PromptReceipt(rig.ids.new(rig.now), prompt_id, deliver.id, rig.now))
    rig.frame(
        wire.PromptUpdate(
            rig.ids.new(rig.now), prompt_id, "decided", how="user", decision="approve", decided_at_ms=rig.now
        )
    )
    rig.run_until(rig.now + 600_000)
    assert escalations(rig, prompt_id) == []
    assert "prompt.escalated" not in rig.types()


def test_failed_to_deliver_escalates_once_with_the_reason_in_words() -> None:
    rig = Rig()
    prompt_id = rig.create(expires_in=300, escalate_after=3600)  # the endpoint never connects
    rig.run_until(rig.now + 301_000)
    view = rig.prompt(prompt_id)
    assert view["state"] == "failed_to_deliver"
    (event,) = escalations(rig, prompt_id)
    assert event["detail"]["reason"] == "could not reach endpoint — offline for 5 min, no attempt made"
    rig.run_until(rig.now + 7_200_000)  # escalate_after passes too: still once
    assert len(escalations(rig, prompt_id)) == 1
    assert rig.types().count("prompt.escalated") == 1


def test_failed_to_deliver_after_attempts_names_them() -> None:
    rig = Rig()
    rig.connect()  # connected, but the runtime never sends a receipt
    prompt_id = rig.create(expires_in=300, escalate_after=3600)
    for _ in range(40):  # heartbeats keep it connected; the alarm retries
        rig.run_until(rig.now + 10_000)
        rig.frame(wire.Heartbeat(rig.ids.new(rig.now), rig.now, "x"))
    view = rig.prompt(prompt_id)
    assert view["state"] == "failed_to_deliver", view["state"]
    (event,) = escalations(rig, prompt_id)
    assert event["detail"]["reason"].startswith(
        f"could not reach endpoint — {view['delivery']['attempts']} attempts over "
    )


def test_the_fleet_default_applies_and_a_prompt_may_override_it() -> None:
    rig = Rig()
    default = {DEFAULT_ESCALATE_HEADER: "60000"}
    _, body = rig.api(
        "POST", f"/api/endpoints/{ENDPOINT}/prompts", {"title": "A", "action": "x", "expires_in": 3600}, default
    )
    by_default = body["prompt_id"]
    _, body = rig.api(
        "POST",
        f"/api/endpoints/{ENDPOINT}/prompts",
        {"title": "B", "action": "x", "expires_in": 3600, "escalate_after": 120},
        default,
    )
    own = body["prompt_id"]
    plain = rig.create(expires_in=3600)
    rig.run_until(rig.now + 61_000)
    assert len(escalations(rig, by_default)) == 1 and escalations(rig, own) == []
    rig.run_until(rig.now + 60_000)
    assert len(escalations(rig, own)) == 1
    assert escalations(rig, plain) == []


@pytest.mark.parametrize("value", [0, 4, -1, 7 * 86_400 + 1, "600", True, None, 1e308, [600]])
def test_escalate_after_is_validated(value: Any) -> None:
    rig = Rig()
    if value is None:  # null means "not given": the create is fine
        rig.create(escalate_after=value)
        return
    status, body = rig.api(
        "POST", f"/api/endpoints/{ENDPOINT}/prompts", {"title": "A", "action": "x", "escalate_after": value}
    )
    assert status == 400 and body["error"]["code"] == "invalid_field", body


def test_manual_escalation_is_recorded_with_who_and_verifies_in_the_audit_export() -> None:
    rig = Rig()
    prompt_id = rig.create(expires_in=600)
    status, body = rig.api(
        "POST", f"/api/endpoints/{ENDPOINT}/prompts/{prompt_id}/escalate", {"note": "user on the phone, call back"}
    )
    assert status == 200, body
    (event,) = [e for e in body["events"] if e["type"] == "escalated"]
    assert event["source"] == "console"
    assert event["detail"] == {
        "by": "tech",
        "reason": "escalated by tech",
        "note": "user on the phone, call back",
        "auto": False,
    }
    assert body["escalations"][0]["by"] == "tech"
    status, _ = rig.api("POST", f"/api/endpoints/{ENDPOINT}/prompts/{prompt_id}/escalate", {})
    assert status == 200  # again, without a note
    rig.run_until(rig.now + 700_000)  # expired: an escalation by hand still works after
    status, _ = rig.api("POST", f"/api/endpoints/{ENDPOINT}/prompts/{prompt_id}/escalate")
    assert status == 200
    assert len(escalations(rig, prompt_id)) == 3
    req = ApiRequest("GET", f"/api/endpoints/{ENDPOINT}/audit", {**TECH, "x-caisey-endpoint": ENDPOINT})
    text = rig.actor.handle(req, rig.now, False)[0].text
    assert text is not None
    report = verify_export(text.splitlines(), lambda key, sig, msg: False)
    assert report.problems == [], report.problems
    assert report.facts >= 5


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"note": ""}, 400, "invalid_field"),
        ({"note": 5}, 400, "invalid_field"),
        ({"note": "a\x1b[31m"}, 400, "invalid_field"),
        ({"note": "x" * (wire.MAX_TEXT_CHARS + 1)}, 400, "field_too_long"),
    ],
)
def test_manual_escalation_refuses_bad_notes(body: dict[str, Any], status: int, code: str) -> None:
    rig = Rig()
    prompt_id = rig.create()
    got, answer = rig.api("POST", f"/api/endpoints/{ENDPOINT}/prompts/{prompt_id}/escalate", body)
    assert (got, answer["error"]["code"]) == (status, code)
    assert escalations(rig, prompt_id) == []


def test_manual_escalation_of_an_unknown_prompt_is_404_and_the_count_is_bounded() -> None:
    rig = Rig()
    got, answer = rig.api("POST", f"/api/endpoints/{ENDPOINT}/prompts/01JUNKJUNKJUNKJUNKJUNKJUNK/escalate", {})
    assert (got, answer["error"]["code"]) == (404, "unknown_prompt")
    prompt_id = rig.create()
    for _ in range(20):
        assert rig.api("POST", f"/api/endpoints/{ENDPOINT}/prompts/{prompt_id}/escalate", {})[0] == 200
    got, answer = rig.api("POST", f"/api/endpoints/{ENDPOINT}/prompts/{prompt_id}/escalate", {})
    assert (got, answer["error"]["code"]) == (409, "too_many_escalations")


# --- webhook events and deliveries ---------------------------------------------------------------------


def test_the_prompt_events_fire_once_each_in_order_with_stable_data() -> None:
    rig = Rig()
    rig.connect()
    prompt_id = rig.create(expires_in=600)
    deliver = next(wire.decode(f) for e in rig.effects for f in e.send if '"prompt.deliver"' in f)
    assert isinstance(deliver, wire.PromptDeliver)
    rig.frame(wire.PromptReceipt(rig.ids.new(rig.now), prompt_id, deliver.id, rig.now))
    rig.frame(wire.PromptReceipt(rig.ids.new(rig.now), prompt_id, deliver.id, rig.now))  # a duplicate
    rig.now += 5_000
    rig.frame(
        wire.PromptUpdate(
            rig.ids.new(rig.now), prompt_id, "decided", how="user", decision="deny", decided_at_ms=rig.now
        )
    )
    rig.alarm()
    assert rig.types() == ["endpoint.online", "prompt.created", "prompt.delivered", "prompt.final"]
    bodies = [json.loads(s["body"]) for s in rig.sends()]
    final = bodies[-1]
    assert final["data"]["state"] == "denied" and final["data"]["decision"] == "deny"
    assert final["data"]["timings"]["to_decision_ms"] == 5_000
    assert set(bodies[1]["data"]) == set(final["data"])  # one shape for every prompt.* event
    for send in rig.sends():
        assert standard_webhooks_verify(SECRET, send["headers"], send["body"].encode())
        assert send["headers"]["webhook-id"].startswith("msg_")
    rig.connected = False
    rig.actor.agent_closed(rig.now, False)
    rig.alarm()
    assert rig.types()[-1] == "endpoint.offline"


def test_a_failed_attempt_is_retried_with_the_same_id_and_body_and_2xx_ends_it() -> None:
    rig = Rig()
    rig.create()
    (first,) = rig.alarm().webhooks
    rig.actor.webhook_results([dict(first, status=500, error="HTTP 500")], rig.now, False)
    assert rig.alarm().webhooks == []  # not before its backoff
    fired = rig.run_until(rig.now + webhooks.RETRY_BASE_MS)
    (second,) = [s for e in fired for s in e.webhooks]
    assert second["headers"]["webhook-id"] == first["headers"]["webhook-id"]
    assert second["body"] == first["body"]
    result = rig.actor.webhook_results([dict(second, status=204, error=None)], rig.now, False)
    assert [r["outcome"] for r in result.webhook_reports] == ["delivered"]
    rig.run_until(rig.now + 3_600_000)
    assert len([s for s in rig.sends() if s["event_id"] == first["event_id"]]) == 2
    assert not rig.actor.store.execute("SELECT 1 FROM webhook_deliveries WHERE event_id = ?", (first["event_id"],))


def test_410_ends_every_delivery_of_that_subscription_and_reports_it_disabled() -> None:
    rig = Rig()
    rig.create()
    rig.create()
    sends = rig.alarm().webhooks
    assert len(sends) == 2
    result = rig.actor.webhook_results([dict(sends[0], status=410, error="HTTP 410")], rig.now, False)
    assert [r["outcome"] for r in result.webhook_reports] == ["disabled"]
    assert rig.actor.store.execute("SELECT COUNT(*) AS n FROM webhook_deliveries")[0]["n"] == 0
    rig.run_until(rig.now + 60_000)
    assert len(rig.sends()) == 2  # the other event's delivery ended too


def test_delivery_gives_up_after_24_hours_and_says_so() -> None:
    rig = Rig()
    rig.create()
    start = rig.now
    fired = rig.run_until(start + 25 * 3_600_000, answer={"status": None, "error": "no answer within 10 s"})
    reports = [r for effects in fired for r in effects.webhook_reports]
    gave_up = [r for r in reports if r["outcome"] == "gave_up"]
    assert sorted(r["type"] for r in gave_up) == ["prompt.created", "prompt.final"]  # once each
    assert all(r["error"].startswith("gave up after 24 h") for r in gave_up)
    assert all(r["at_ms"] - start >= 24 * 3_600_000 for r in gave_up)
    attempts = len(rig.sends())
    assert 2 * 20 < attempts < 2 * 80, attempts  # two events, full jitter capped at 1 h
    assert rig.actor.store.execute("SELECT COUNT(*) AS n FROM webhook_deliveries")[0]["n"] == 0


def test_a_subscription_gets_only_the_types_it_asked_for_and_a_deleted_one_nothing() -> None:
    rig = Rig()
    rig.create()
    only_final = [dict(TARGETS[0], id="wh_f", events=["prompt.final"])]
    assert rig.alarm(only_final).webhooks == []
    rig.create()
    assert rig.alarm([]).webhooks == []  # no subscription: the events are dropped
    assert rig.actor.store.execute("SELECT COUNT(*) AS n FROM webhook_events")[0]["n"] == 0
    rig.create()  # and for a minute nothing is kept: nobody listens (no alarm, no fleet read)
    assert rig.actor.store.execute("SELECT COUNT(*) AS n FROM webhook_events")[0]["n"] == 0
    rig.now += 60_000
    rig.create()
    assert len(rig.alarm().webhooks) == 1  # then the subscriptions are read again


def test_without_targets_the_events_wait_for_the_next_alarm() -> None:
    rig = Rig()
    rig.create()
    assert rig.alarm(None).webhooks == []
    assert rig.actor.next_alarm_ms(rig.now, False) == rig.now
    assert len(rig.alarm().webhooks) == 1


def test_a_host_without_webhooks_keeps_no_events() -> None:
    rig = Rig(webhooks_on=False)
    rig.create(escalate_after=60)
    rig.run_until(rig.now + 61_000)
    assert rig.actor.store.execute("SELECT COUNT(*) AS n FROM webhook_events")[0]["n"] == 0


# --- the local host's sender: names are resolved and checked at send time ----------------------


async def test_the_local_resolver_answers_only_public_addresses() -> None:
    from worker.webhook_sender import PublicOnlyResolver, WebhookSender

    resolver = PublicOnlyResolver()
    with pytest.raises(OSError, match="refused"):
        await resolver.resolve("localhost", 443)

    class Mixed:
        async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[dict[str, Any]]:
            return [{"host": h, "port": port} for h in ("10.0.0.7", "93.184.216.34", "::1")]

        async def close(self) -> None:
            pass

    resolver._inner = Mixed()  # type: ignore[assignment]
    assert [a["host"] for a in await resolver.resolve("mixed.example", 443)] == ["93.184.216.34"]
    await resolver.close()
    sender = WebhookSender(allow_private=False)
    send = {"event_id": "msg_1", "subscription_id": "wh_a", "url": "https://127.0.0.1/", "headers": {}, "body": "{}"}
    result = await sender.send(send)
    assert result["status"] is None and result["error"].startswith("target refused: 127.0.0.1 is a loopback")
    await sender.close()
