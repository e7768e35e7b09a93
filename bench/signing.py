"""What signed answers cost (DESIGN §10): the agent's signature, the bridge's verification,
and one ``decided`` update through the actor signed vs unsigned, in the same run.

- ``sign``: ``caisey.signing.answer_message`` + Ed25519 sign + base64 (the agent, per answer);
- ``verify``: one Ed25519 verification with ``cryptography`` (the local host, per answer);
- ``claims``: ``EndpointBridge.signature_claims`` on a decided frame (the actor reads the key
  and the prompt's created fact, and rebuilds the signed bytes);
- ``update_signed`` / ``update_unsigned``: the actor's whole ``decided`` event (claims, verify,
  commit, ack) on an in-memory store, for a keyed and a keyless endpoint — the baseline.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from agent.identity import EndpointKey
from caisey import wire
from caisey.signing import answer_message, b64encode
from worker.api import ROLE_HEADER, TECHNICIAN_HEADER, ApiRequest
from worker.ed25519_local import verified, verify
from worker.endpoint import EndpointBridge
from worker.host import Entropy
from worker.sqlite_store import SqliteStore

ENDPOINT = "bench-signing"
HEADERS = {TECHNICIAN_HEADER: "admin", ROLE_HEADER: "admin", "x-caisey-endpoint": ENDPOINT}


def _us(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "mean_us": round(statistics.fmean(ordered) * 1e6, 1),
        "p50_us": round(ordered[len(ordered) // 2] * 1e6, 1),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6, 1),
    }


class _Endpoint:
    """An actor with one endpoint, enrolled with ``key`` (or keyless), and prompts to decide."""

    def __init__(self, key: EndpointKey | None) -> None:
        self.key = key
        self.now = int(time.time() * 1000)
        self.actor = EndpointBridge(SqliteStore(":memory:"), Entropy())
        body = json.dumps({"endpoint_id": ENDPOINT}).encode()
        response, _ = self.actor.handle(ApiRequest("POST", "/api/enrollments", HEADERS, body), self.now, False)
        exchange: dict[str, Any] = {"enrollment_token": response.body["enrollment_token"]}
        if key is not None:
            exchange["public_key"] = key.public_key_b64
        enroll = ApiRequest("POST", "/api/agent/enroll", {"x-caisey-endpoint": ENDPOINT}, json.dumps(exchange).encode())
        self.actor.handle(enroll, self.now, False)
        hello = wire.Hello("hello-1", ENDPOINT, "bench", self.now)
        self.actor.agent_frame(wire.encode(hello), self.now)
        self.n = 0

    def delivered(self) -> wire.PromptCopy:
        body = json.dumps({"title": "Allow remote control?", "action": "remote_control", "expires_in": 600}).encode()
        path = f"/api/endpoints/{ENDPOINT}/prompts"
        _, effects = self.actor.handle(ApiRequest("POST", path, HEADERS, body), self.now, True)
        deliver = next(m for m in map(wire.decode, effects.send) if isinstance(m, wire.PromptDeliver))
        self.n += 1
        receipt = wire.PromptReceipt(f"r-{self.n}", deliver.prompt.prompt_id, deliver.id, self.now)
        self.actor.agent_frame(wire.encode(receipt), self.now)
        return deliver.prompt

    def decided_frame(self, copy: wire.PromptCopy) -> str:
        key_id = sig = None
        if self.key is not None:
            key_id = self.key.key_id
            sig = b64encode(self.key.sign(answer_message(ENDPOINT, copy, "approve", "user", self.now)))
        update = wire.PromptUpdate(
            f"u-{copy.prompt_id}", copy.prompt_id, "decided", "user", "approve", self.now, key_id=key_id, sig=sig
        )
        return wire.encode(update)

    def apply(self, frame: str) -> None:
        effects = self.actor.agent_frame(frame, self.now, verified(self.actor.signature_claims(frame)))
        assert any(m.TYPE == "ack" for m in map(wire.decode, effects.send)), "the answer was not acked"


def measure(n: int) -> dict[str, Any]:
    key = EndpointKey.generate()
    signed, unsigned = _Endpoint(key), _Endpoint(None)
    sign_t: list[float] = []
    verify_t: list[float] = []
    claims_t: list[float] = []
    update_signed: list[float] = []
    update_unsigned: list[float] = []
    for _ in range(n):  # one prompt at a time (an endpoint holds at most 100 open)
        copy = signed.delivered()
        t0 = time.perf_counter()
        b64encode(key.sign(answer_message(ENDPOINT, copy, "approve", "user", signed.now)))
        sign_t.append(time.perf_counter() - t0)
        frame = signed.decided_frame(copy)
        t0 = time.perf_counter()
        claims = signed.actor.signature_claims(frame)
        claims_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert verify(claims[0])
        verify_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        signed.apply(frame)
        update_signed.append(time.perf_counter() - t0)
        plain_frame = unsigned.decided_frame(unsigned.delivered())
        t0 = time.perf_counter()
        unsigned.apply(plain_frame)
        update_unsigned.append(time.perf_counter() - t0)
    result = {
        "n": n,
        "sign": _us(sign_t),
        "verify": _us(verify_t),
        "claims": _us(claims_t),
        "update_signed": _us(update_signed),
        "update_unsigned": _us(update_unsigned),
    }
    result["update_overhead_us"] = round(result["update_signed"]["mean_us"] - result["update_unsigned"]["mean_us"], 1)
    return result
