"""Tests for ``caisey.facts``: every fact kind survives the row form hosts store it in
(``fact_to_record`` → JSON → ``fact_from_record``), and a row we cannot read is refused."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caisey.errors import ProtocolError
from caisey.facts import (
    FACT_TYPES,
    Acknowledged,
    Cancelled,
    Created,
    Decided,
    Decision,
    DeliveryAttempted,
    Escalated,
    Fact,
    GaveUp,
    GiveUpReason,
    NoDecisionHeld,
    NoUserPolicy,
    Received,
    Rejected,
    Replayed,
    SignatureRefused,
    Source,
    Superseded,
    WindowEnded,
    WindowRevoked,
    WindowStarted,
    fact_from_record,
    fact_to_record,
    source_of,
)

T = 1_764_151_440_000
SAMPLES: list[Fact] = [
    Created(
        "Allow remote control?",
        "Alice wants to see your screen.",
        "remote_control",
        T + 300_000,
        NoUserPolicy.DENY,
        "alice",
        supersedes="01JDQ7OLD00000000000000000",
    ),
    Created("Install update?", "", "install_update", T, NoUserPolicy.WAIT, "bob", adopted=True),
    Cancelled(by="alice"),
    Superseded(by_prompt_id="01JDQ9A0000000000000000000", by="alice"),
    DeliveryAttempted(attempt=2, next_attempt_at_ms=T + 4_000, error="timeout"),
    DeliveryAttempted(attempt=9, next_attempt_at_ms=None),
    Replayed(reason="runtime does not hold it"),
    GaveUp(GiveUpReason.REJECTED_BY_RUNTIME, "unsupported action"),
    GaveUp(GiveUpReason.NO_RECEIPT),
    Received(runtime_at_ms=T - 2_000),
    Acknowledged(how="dismissed"),
    Decided(Decision.DENY, decided_at_ms=T + 1, how="no_user_policy"),
    Rejected(reason="unsupported action"),
    NoDecisionHeld(detail="closed at expiry"),
    Decided(Decision.APPROVE, decided_at_ms=T + 2, how="user", key_id="0123456789abcdef", sig="c2ln"),
    Acknowledged(how="dismissed", key_id="0123456789abcdef", sig="c2ln"),
    SignatureRefused(answer="approve", how="user", reason="retired_key", key_id="0123456789abcdef", decided_at_ms=T),
    Escalated(by="bridge", reason="not answered in 10 min", auto=True),
    Escalated(by="bob", reason="escalated by bob", note="call them"),
    # Issue 16: approval windows (DESIGN §13).
    WindowStarted(minutes=10, asked=30, started_at_ms=T, ends_at_ms=T + 600_000, key_id="0123456789abcdef", sig="c2ln"),
    WindowEnded(ended_at_ms=T + 600_000),
    WindowRevoked(by="user", user=True, revoked_at_ms=T + 5, key_id="0123456789abcdef", sig="c2ln"),
    WindowRevoked(by="bob", user=False, revoked_at_ms=T + 6),
]


def test_samples_cover_every_fact_kind() -> None:
    assert {f.KIND for f in SAMPLES} == set(FACT_TYPES)


@pytest.mark.parametrize("fact", SAMPLES, ids=lambda f: f.KIND)
def test_every_kind_round_trips_through_its_json_row(fact: Fact) -> None:
    kind, fields = fact_to_record(fact)
    assert kind == fact.KIND
    stored = json.loads(json.dumps(fields))  # what a SQLite TEXT column gives back
    rebuilt = fact_from_record(kind, stored)
    assert rebuilt == fact and type(rebuilt) is type(fact)
    for value in stored.values():  # enums are stored as their plain values
        assert value is None or isinstance(value, (str, int, bool))


@given(st.one_of([st.builds(cls) for cls in FACT_TYPES.values()]))
def test_any_fact_round_trips(fact: Fact) -> None:
    kind, fields = fact_to_record(fact)
    assert fact_from_record(kind, json.loads(json.dumps(fields))) == fact


def test_enum_fields_come_back_as_enums() -> None:
    decided = fact_from_record(*fact_to_record(Decided(Decision.APPROVE, T)))
    assert isinstance(decided, Decided) and decided.decision is Decision.APPROVE
    gave_up = fact_from_record(*fact_to_record(GaveUp(GiveUpReason.ENDPOINT_UNREACHABLE)))
    assert isinstance(gave_up, GaveUp) and gave_up.reason is GiveUpReason.ENDPOINT_UNREACHABLE
    # Replayed and Rejected also have a ``reason``, but it is free text, not a GiveUpReason.
    assert fact_from_record("rejected", {"reason": "endpoint_unreachable"}) == Rejected("endpoint_unreachable")
    assert fact_from_record("replayed", {"reason": "whatever"}) == Replayed("whatever")


@pytest.mark.parametrize("kind", ["", "exploded", "Created", "decided "])
def test_unknown_kind_is_a_protocol_error(kind: str) -> None:
    with pytest.raises(ProtocolError) as info:
        fact_from_record(kind, {})
    assert info.value.code == "unknown_fact"


@pytest.mark.parametrize(
    "kind, fields",
    [
        ("cancelled", {}),  # missing field
        ("cancelled", {"by": "a", "colour": "blue"}),  # unknown field
        ("decided", {"decision": "maybe", "decided_at_ms": T}),  # bad enum value
        ("gave_up", {"reason": "bored"}),
        ("created", {"title": "t"}),
    ],
)
def test_an_unreadable_row_is_a_protocol_error(kind: str, fields: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        fact_from_record(kind, fields)
    assert info.value.code == "bad_fact"


def test_each_fact_has_one_writer() -> None:
    console = {Created, Cancelled, Superseded}
    bridge = {DeliveryAttempted, Replayed, GaveUp, SignatureRefused, Escalated, WindowEnded}
    for cls in FACT_TYPES.values():
        expected = Source.CONSOLE if cls in console else Source.BRIDGE if cls in bridge else Source.RUNTIME
        assert expected == cls.SOURCE, cls
    # An adopted prompt (R6) was rebuilt from the runtime's copy: the runtime wrote it.
    adopted = SAMPLES[1]
    assert isinstance(adopted, Created) and adopted.adopted
    assert source_of(adopted) == Source.RUNTIME and source_of(SAMPLES[0]) == Source.CONSOLE
    assert source_of(Decided(Decision.DENY, T)) == Source.RUNTIME
    # A window revoked by the user is the runtime's; by a technician, the console's (DESIGN §13).
    assert source_of(WindowRevoked(by="user", user=True, revoked_at_ms=T)) == Source.RUNTIME
    assert source_of(WindowRevoked(by="bob", user=False, revoked_at_ms=T)) == Source.CONSOLE
    # An escalation by hand is the technician's (the console's); the bridge's own is the bridge's.
    assert source_of(Escalated(by="bob", reason="escalated by bob")) == Source.CONSOLE
    assert source_of(Escalated(by="bridge", reason="not answered in 10 min", auto=True)) == Source.BRIDGE


def test_facts_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Cancelled(by="a").by = "b"  # type: ignore[misc]
