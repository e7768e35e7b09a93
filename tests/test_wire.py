"""Tests for ``caisey.wire`` (DESIGN §7): every frame type round-trips, every bound is refused
with a precise ``ProtocolError`` code, and fuzzed input of any shape either decodes or raises
``ProtocolError`` — never any other exception (after h11's and websockets' parser fuzzing).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caisey import wire
from caisey.errors import ProtocolError
from caisey.wire import (
    MAX_FRAME_BYTES,
    MAX_OPEN_PROMPTS,
    MAX_TIME_MS,
    MESSAGE_TYPES,
    Ack,
    Error,
    Heartbeat,
    HeldPrompt,
    Hello,
    HelloOk,
    Message,
    PromptCancel,
    PromptCopy,
    PromptDeliver,
    PromptReceipt,
    PromptUpdate,
    StateReport,
    StateRequest,
    decode,
    encode,
    peek_id,
)

T = 1_764_151_440_000
DIGEST = "9f" * 32
# The codes a host may put in an ``error`` frame; anything else escaping decode is a bug.
ERROR_CODES = {
    "frame_too_large",
    "malformed_json",
    "not_an_object",
    "unsupported_version",
    "unknown_type",
    "missing_field",
    "invalid_field",
    "field_too_long",
    "too_many_items",
}

COPY = PromptCopy(
    prompt_id="01JDQ8Z6N1XQ3V9V5Y4W2K7T0A",
    title="Allow remote control?",
    message="Alice from the help desk wants to see your screen.",
    action="remote_control",
    created_at_ms=T,
    expires_at_ms=T + 300_000,
    on_no_user="wait",
    requested_by="alice",
)
SAMPLES: dict[str, Message] = {
    "hello": Hello(id="e1", endpoint_id="laptop-7", agent_version="caisey-agent 0.1.0", sent_at_ms=T),
    "hello.ok": HelloOk(id="e2", in_reply_to="e1", received_at_ms=T + 20, sent_at_ms=T + 21, heartbeat_ms=15_000),
    "prompt.deliver": PromptDeliver(id="e3", prompt=COPY),
    "prompt.cancel": PromptCancel(id="e4", prompt_id=COPY.prompt_id, reason="superseded"),
    "prompt.receipt": PromptReceipt(id="e5", prompt_id=COPY.prompt_id, deliver_id="e3", received_at_ms=T + 5),
    "prompt.update": PromptUpdate(
        id="e6", prompt_id=COPY.prompt_id, status="decided", how="user", decision="approve", decided_at_ms=T + 9
    ),
    "prompt.update/acknowledged": PromptUpdate(id="e6a", prompt_id=COPY.prompt_id, status="acknowledged", how="shown"),
    "state.report": StateReport(
        id="e7",
        prompts=(
            HeldPrompt(prompt=COPY, status="received"),
            HeldPrompt(prompt=COPY, status="decided", decision="deny", decided_at_ms=T + 7, how="user"),
        ),
        digest=DIGEST,
    ),
    "state.request": StateRequest(id="e8", reason="digest mismatch"),
    "ack": Ack(id="e9", of="e6", received_at_ms=T + 1, sent_at_ms=T + 2),
    "heartbeat": Heartbeat(id="e10", sent_at_ms=T, digest=DIGEST),
    "error": Error(id="e11", code="unsupported_version", message="use v1", of="x1", supported_versions=(1,)),
    # Issue 16: approval windows (DESIGN §13).
    "window.update": wire.WindowUpdate(
        id="e12", prompt_id=COPY.prompt_id, event="start", minutes=30, at_ms=T + 9, key_id="k1", sig="s" * 86
    ),
    "window.update/revoke": wire.WindowUpdate(id="e13", prompt_id=COPY.prompt_id, event="revoke", minutes=30, at_ms=T),
    "window.notice": wire.WindowNotice(id="e14", prompt_id=COPY.prompt_id, state="revoked", at_ms=T, by="alice"),
}


def body_of(message: Message) -> dict[str, Any]:
    body = json.loads(encode(message))
    assert isinstance(body, dict)
    return body


def with_value(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with the field at ``path`` set to ``value`` (or removed, for ...)."""
    copy = json.loads(json.dumps(body))
    target = copy
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return copy


def refused(raw: str | bytes | dict[str, Any]) -> ProtocolError:
    text = json.dumps(raw) if isinstance(raw, dict) else raw
    with pytest.raises(ProtocolError) as info:
        decode(text)
    return info.value


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("event", "grant"), ("minutes", 0), ("minutes", wire.MAX_GRANT_MINUTES + 1), ("minutes", True), ("at_ms", -1)],
)
def test_a_window_update_out_of_bounds_is_refused(field: str, value: Any) -> None:
    body = with_value(body_of(SAMPLES["window.update"]), (field,), value)
    assert refused(body).code == "invalid_field"
    notice = with_value(body_of(SAMPLES["window.notice"]), ("state",), "granted")
    assert refused(notice).code == "invalid_field"
    half = with_value(body_of(SAMPLES["window.update"]), ("sig",), ...)
    assert refused(half).code == "invalid_field"  # key_id without sig


def test_samples_cover_every_frame_type() -> None:
    assert {m.TYPE for m in SAMPLES.values()} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_frame_type_round_trips(name: str) -> None:
    message = SAMPLES[name]
    text = encode(message)
    assert decode(text) == message
    assert decode(text.encode()) == message
    body = json.loads(text)
    assert body["v"] == 1 and body["type"] == message.TYPE and body["id"] == message.id


def test_unknown_extra_fields_are_ignored() -> None:
    body = body_of(SAMPLES["prompt.deliver"])
    body["added_in_a_later_version"] = {"x": [1, 2]}
    body["prompt"]["colour"] = "blue"
    assert decode(json.dumps(body)) == SAMPLES["prompt.deliver"]


ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=wire.MAX_ID_CHARS)
times = st.integers(0, MAX_TIME_MS)


def texts(max_size: int, *, empty_ok: bool = False) -> st.SearchStrategy[str]:
    return st.text(min_size=0 if empty_ok else 1, max_size=min(max_size, 40)) | st.text(
        alphabet="xé😀", min_size=max_size, max_size=max_size
    )


prompt_copies = st.builds(
    PromptCopy,
    prompt_id=ids,
    title=texts(wire.MAX_TITLE_CHARS),
    message=texts(wire.MAX_MESSAGE_CHARS, empty_ok=True),
    action=texts(wire.MAX_ACTION_CHARS),
    created_at_ms=times,
    expires_at_ms=times,
    on_no_user=st.sampled_from(wire.NO_USER_POLICIES),
    requested_by=texts(wire.MAX_NAME_CHARS, empty_ok=True),
)


@st.composite
def held_prompts(draw: st.DrawFn) -> HeldPrompt:
    status = draw(st.sampled_from(wire.RUNTIME_STATUSES))
    decided = status == "decided"
    return HeldPrompt(
        prompt=draw(prompt_copies),
        status=status,
        decision=draw(st.sampled_from(wire.DECISIONS) if decided else st.none() | st.sampled_from(wire.DECISIONS)),
        decided_at_ms=draw(times if decided else st.none() | times),
        how=draw(st.none() | texts(wire.MAX_TEXT_CHARS)),
    )


@st.composite
def prompt_updates(draw: st.DrawFn) -> PromptUpdate:
    status = draw(st.sampled_from(["acknowledged", "decided", "closed", "rejected"]))
    decided = status == "decided"
    return PromptUpdate(
        id=draw(ids),
        prompt_id=draw(ids),
        status=status,
        how=draw(st.none() | texts(wire.MAX_TEXT_CHARS, empty_ok=True)),
        decision=draw(st.sampled_from(wire.DECISIONS) if decided else st.none()),
        decided_at_ms=draw(times if decided else st.none()),
        detail=draw(st.none() | texts(wire.MAX_TEXT_CHARS, empty_ok=True)),
    )


frames: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, id=ids, endpoint_id=ids, agent_version=texts(wire.MAX_NAME_CHARS), sent_at_ms=times),
    st.builds(
        HelloOk,
        id=ids,
        in_reply_to=ids,
        received_at_ms=times,
        sent_at_ms=times,
        heartbeat_ms=st.integers(1_000, 3_600_000),
    ),
    st.builds(PromptDeliver, id=ids, prompt=prompt_copies),
    st.builds(PromptCancel, id=ids, prompt_id=ids, reason=st.sampled_from(["cancelled", "superseded"])),
    st.builds(PromptReceipt, id=ids, prompt_id=ids, deliver_id=ids, received_at_ms=times),
    prompt_updates(),
    st.builds(
        StateReport,
        id=ids,
        prompts=st.lists(held_prompts(), max_size=4).map(tuple),
        digest=st.text(alphabet="0123456789abcdef", min_size=1, max_size=wire.MAX_DIGEST_CHARS),
    ),
    st.builds(StateRequest, id=ids, reason=texts(wire.MAX_TEXT_CHARS, empty_ok=True)),
    st.builds(Ack, id=ids, of=ids, received_at_ms=st.none() | times, sent_at_ms=st.none() | times),
    st.builds(Heartbeat, id=ids, sent_at_ms=times, digest=st.text(min_size=1, max_size=wire.MAX_DIGEST_CHARS)),
    st.builds(
        Error,
        id=ids,
        code=texts(wire.MAX_NAME_CHARS),
        message=texts(wire.MAX_TEXT_CHARS, empty_ok=True),
        of=st.none() | texts(wire.MAX_ID_CHARS),
        supported_versions=st.none() | st.lists(st.integers(0, 2**31), max_size=16).map(tuple),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames)
def test_any_valid_frame_round_trips(message: Message) -> None:
    text = encode(message)
    assert decode(text) == message
    assert decode(text.encode("utf-8")) == message


# --- bounds, each refused with a precise code ----------------------------------------------------


def test_a_frame_over_the_size_limit_is_refused_before_parsing() -> None:
    assert refused("x" * (MAX_FRAME_BYTES + 1)).code == "frame_too_large"
    assert refused(b"x" * (MAX_FRAME_BYTES + 1)).code == "frame_too_large"
    # the limit counts UTF-8 bytes, not characters
    assert refused("é" * (MAX_FRAME_BYTES // 2 + 1)).code == "frame_too_large"


def test_a_frame_of_exactly_the_size_limit_is_accepted() -> None:
    body = body_of(SAMPLES["state.request"])
    body["padding"] = ""
    size = len(json.dumps(body).encode())
    body["padding"] = "p" * (MAX_FRAME_BYTES - size)
    text = json.dumps(body)
    assert len(text.encode()) == MAX_FRAME_BYTES
    assert decode(text) == SAMPLES["state.request"]
    body["padding"] += "p"
    assert refused(body).code == "frame_too_large"


def test_encode_refuses_a_frame_over_the_size_limit() -> None:
    big = dataclasses.replace(COPY, message="€" * wire.MAX_MESSAGE_CHARS)  # 6 KB of UTF-8 each
    report = StateReport(id="r", prompts=(HeldPrompt(big, "received"),) * MAX_OPEN_PROMPTS, digest=DIGEST)
    with pytest.raises(ProtocolError) as info:
        encode(report)
    assert info.value.code == "frame_too_large"


# (sample, path to a string field, its limit, may it be empty, is it an id)
STRING_FIELDS = [
    ("hello", ("id",), wire.MAX_ID_CHARS, False, True),
    ("hello", ("endpoint_id",), wire.MAX_ID_CHARS, False, True),
    ("hello", ("agent_version",), wire.MAX_NAME_CHARS, False, False),
    ("hello.ok", ("in_reply_to",), wire.MAX_ID_CHARS, False, True),
    ("prompt.deliver", ("prompt", "prompt_id"), wire.MAX_ID_CHARS, False, True),
    ("prompt.deliver", ("prompt", "title"), wire.MAX_TITLE_CHARS, False, False),
    ("prompt.deliver", ("prompt", "message"), wire.MAX_MESSAGE_CHARS, True, False),
    ("prompt.deliver", ("prompt", "action"), wire.MAX_ACTION_CHARS, False, False),
    ("prompt.deliver", ("prompt", "requested_by"), wire.MAX_NAME_CHARS, True, False),
    ("prompt.cancel", ("prompt_id",), wire.MAX_ID_CHARS, False, True),
    ("prompt.receipt", ("deliver_id",), wire.MAX_ID_CHARS, False, True),
    ("prompt.update", ("how",), wire.MAX_TEXT_CHARS, True, False),
    ("prompt.update", ("detail",), wire.MAX_TEXT_CHARS, True, False),
    ("state.report", ("digest",), wire.MAX_DIGEST_CHARS, False, False),
    ("state.report", ("prompts", 1, "how"), wire.MAX_TEXT_CHARS, False, False),
    ("state.report", ("prompts", 0, "prompt", "title"), wire.MAX_TITLE_CHARS, False, False),
    ("state.request", ("reason",), wire.MAX_TEXT_CHARS, True, False),
    ("ack", ("of",), wire.MAX_ID_CHARS, False, True),
    ("heartbeat", ("digest",), wire.MAX_DIGEST_CHARS, False, False),
    ("error", ("code",), wire.MAX_NAME_CHARS, False, False),
    ("error", ("message",), wire.MAX_TEXT_CHARS, True, False),
    ("error", ("of",), wire.MAX_ID_CHARS, False, False),
]


@pytest.mark.parametrize("name, path, limit, empty_ok, is_id", STRING_FIELDS)
def test_string_lengths_are_bounded(
    name: str, path: tuple[str | int, ...], limit: int, empty_ok: bool, is_id: bool
) -> None:
    body = body_of(SAMPLES[name])
    char = "A" if is_id else "é"  # limits count characters, not bytes
    assert decode(json.dumps(with_value(body, path, char * limit))).TYPE == SAMPLES[name].TYPE
    error = refused(with_value(body, path, char * (limit + 1)))
    assert error.code == "field_too_long"
    assert str(limit) in error.message
    if empty_ok:
        decode(json.dumps(with_value(body, path, "")))
    else:
        assert refused(with_value(body, path, "")).code == "invalid_field"
    assert refused(with_value(body, path, 7)).code == "invalid_field"


@pytest.mark.parametrize("bad_id", ["a b", "a/b", "é", "abc\n", "\nabc", "a\x00", "x;y", "ab\u2028"])
@pytest.mark.parametrize("path", [("id",), ("prompt_id",), ("deliver_id",)])
def test_ids_are_limited_to_a_safe_charset(bad_id: str, path: tuple[str]) -> None:
    body = body_of(SAMPLES["prompt.receipt"])
    error = refused(with_value(body, path, bad_id))
    assert error.code == "invalid_field"
    assert "letters, digits" in error.message


def test_ids_may_hold_letters_digits_and_dot_underscore_colon_dash() -> None:
    message = PromptReceipt(id="a.b_c:d-9", prompt_id="Z" * 64, deliver_id="0", received_at_ms=0)
    assert decode(encode(message)) == message


def test_report_item_count_is_bounded() -> None:
    held = HeldPrompt(COPY, "received")
    full = StateReport(id="r", prompts=(held,) * MAX_OPEN_PROMPTS, digest=DIGEST)
    assert decode(encode(full)) == full
    body = body_of(full)
    body["prompts"].append(body["prompts"][0])
    error = refused(body)
    assert error.code == "too_many_items" and str(MAX_OPEN_PROMPTS) in error.message
    # counted before any item is parsed: garbage items are not even looked at
    body["prompts"] = [None] * (MAX_OPEN_PROMPTS + 1)
    assert refused(body).code == "too_many_items"
    with pytest.raises(ProtocolError) as info:
        StateReport(id="r", prompts=(held,) * (MAX_OPEN_PROMPTS + 1), digest=DIGEST)
    assert info.value.code == "too_many_items"


# (sample, path to a time field)
TIME_FIELDS = [
    ("hello", ("sent_at_ms",)),
    ("hello.ok", ("received_at_ms",)),
    ("hello.ok", ("sent_at_ms",)),
    ("prompt.deliver", ("prompt", "created_at_ms")),
    ("prompt.deliver", ("prompt", "expires_at_ms")),
    ("prompt.receipt", ("received_at_ms",)),
    ("prompt.update", ("decided_at_ms",)),
    ("prompt.update/acknowledged", ("decided_at_ms",)),
    ("state.report", ("prompts", 1, "decided_at_ms")),
    ("state.report", ("prompts", 0, "decided_at_ms")),
    ("state.report", ("prompts", 0, "prompt", "expires_at_ms")),
    ("ack", ("received_at_ms",)),
    ("ack", ("sent_at_ms",)),
    ("heartbeat", ("sent_at_ms",)),
]


@pytest.mark.parametrize("name, path", TIME_FIELDS)
def test_times_are_epoch_ms_within_bounds(name: str, path: tuple[str | int, ...]) -> None:
    body = body_of(SAMPLES[name])
    for good in (0, 1, MAX_TIME_MS):
        decode(json.dumps(with_value(body, path, good)))
    for bad in (-1, MAX_TIME_MS + 1, 2**53, 2**64, 1.5, 1.0, float(T), "1764151440000", [T], {"ms": T}, True, False):
        error = refused(with_value(body, path, bad))
        assert error.code == "invalid_field", (bad, error)


def test_max_time_is_exact_in_a_javascript_number() -> None:
    assert MAX_TIME_MS < 2**53


INT_FIELDS = [*TIME_FIELDS, ("hello.ok", ("heartbeat_ms",))]


@pytest.mark.parametrize("name, path", INT_FIELDS)
def test_a_bool_where_an_int_is_expected_is_refused(name: str, path: tuple[str | int, ...]) -> None:
    body = body_of(SAMPLES[name])
    for flag in (True, False):
        assert refused(with_value(body, path, flag)).code == "invalid_field"


def test_heartbeat_interval_is_bounded() -> None:
    body = body_of(SAMPLES["hello.ok"])
    for good in (1_000, 3_600_000):
        decode(json.dumps(with_value(body, ("heartbeat_ms",), good)))
    for bad in (999, 0, -1, 3_600_001):
        assert refused(with_value(body, ("heartbeat_ms",), bad)).code == "invalid_field"


@pytest.mark.parametrize(
    "name, path",
    [
        ("prompt.deliver", ("prompt", "on_no_user")),
        ("prompt.cancel", ("reason",)),
        ("prompt.update", ("status",)),
        ("prompt.update", ("decision",)),
        ("prompt.update/acknowledged", ("decision",)),
        ("state.report", ("prompts", 0, "status")),
        ("state.report", ("prompts", 1, "decision")),
    ],
)
def test_choices_are_refused_outside_their_set(name: str, path: tuple[str | int, ...]) -> None:
    body = body_of(SAMPLES[name])
    for bad in ("maybe", "", "APPROVE", "approve "):
        assert refused(with_value(body, path, bad)).code == "invalid_field"


@pytest.mark.parametrize(
    "name, path",
    [
        ("hello", ("endpoint_id",)),
        ("hello", ("id",)),
        ("prompt.deliver", ("prompt", "title")),
        ("prompt.update", ("decision",)),
        ("prompt.update", ("decided_at_ms",)),
        ("state.report", ("prompts",)),
        ("state.report", ("prompts", 1, "decided_at_ms")),
        ("heartbeat", ("digest",)),
        ("error", ("code",)),
    ],
)
def test_a_missing_field_is_named(name: str, path: tuple[str | int, ...]) -> None:
    error = refused(with_value(body_of(SAMPLES[name]), path, ...))
    assert error.code == "missing_field"
    assert str(path[-1]) in error.message


def test_a_missing_or_non_object_prompt_is_refused() -> None:
    body = body_of(SAMPLES["prompt.deliver"])
    for bad in (..., None, [], "prompt", 3):
        assert refused(with_value(body, ("prompt",), bad)).code == "invalid_field"
    report = body_of(SAMPLES["state.report"])
    assert refused(with_value(report, ("prompts", 0), "x")).code == "invalid_field"
    assert refused(with_value(report, ("prompts",), {"a": 1})).code == "invalid_field"


def test_error_frame_supported_versions_must_be_a_short_list_of_ints() -> None:
    body = body_of(SAMPLES["error"])
    for bad in ([True], ["1"], [1.0], list(range(17)), 1, "1"):
        assert refused(with_value(body, ("supported_versions",), bad)).code == "invalid_field"
    assert decode(json.dumps(with_value(body, ("supported_versions",), list(range(16))))).TYPE == "error"


@pytest.mark.parametrize("version", [2, 0, -1, "1", None, True, 1.5, [1], {"v": 1}, ...])
def test_unknown_version_is_refused_naming_the_supported_versions(version: Any) -> None:
    error = refused(with_value(body_of(SAMPLES["hello"]), ("v",), version))
    assert error.code == "unsupported_version"
    assert "supported versions: [1]" in error.message


@pytest.mark.parametrize("frame_type", ["prompt.explode", "HELLO", "", 5, None, ["hello"], ...])
def test_unknown_type_is_refused(frame_type: Any) -> None:
    error = refused(with_value(body_of(SAMPLES["hello"]), ("type",), frame_type))
    assert error.code == "unknown_type"
    assert "hello" in error.message and "state.report" in error.message


@pytest.mark.parametrize("raw", ["", "{", "{'v': 1}", "{}}", b"\xff\xfe\xfd", b'{"v": 1, "x": "\xc3"}', "NaN x"])
def test_malformed_json_is_refused(raw: str | bytes) -> None:
    assert refused(raw).code == "malformed_json"


@pytest.mark.parametrize("raw", ["[]", "1", '"hello"', "null", "true", "[{}]"])
def test_a_frame_must_be_a_json_object(raw: str) -> None:
    assert refused(raw).code == "not_an_object"


def test_a_lone_surrogate_is_refused_in_either_form() -> None:
    # As a JSON escape it would decode into a string no UTF-8 frame can carry back out.
    escaped = '{"v":1,"type":"state.request","id":"e1","reason":"\\ud800"}'
    assert refused(escaped).code == "invalid_field"
    # As a raw character it cannot have come off a UTF-8 WebSocket at all.
    raw = '{"v":1,"type":"state.request","id":"e1","reason":"\ud800"}'
    assert refused(raw).code == "malformed_json"
    with pytest.raises(ProtocolError):
        StateRequest(id="e1", reason="\udfff")


def test_decided_lines_need_their_decision() -> None:
    with pytest.raises(ProtocolError) as info:
        PromptUpdate(id="u", prompt_id="p", status="decided", decision="approve")
    assert info.value.code == "missing_field"
    with pytest.raises(ProtocolError) as info:
        HeldPrompt(COPY, "decided", decided_at_ms=T)
    assert info.value.code == "missing_field"


def test_peek_id_finds_the_id_of_a_frame_that_failed_to_decode() -> None:
    assert peek_id('{"v": 9, "id": "e42"}') == "e42"
    assert peek_id(b'{"type": "nope", "id": "e43"}') == "e43"
    for raw in (
        "not json",
        "[1]",
        '{"id": 5}',
        '{"id": ""}',
        '{"id": "' + "x" * 65 + '"}',
        "x" * (MAX_FRAME_BYTES + 1),
    ):
        assert peek_id(raw) is None, raw


# --- fuzzing ---------------------------------------------------------------------------------------


def decode_or_refuse(raw: str | bytes) -> Message | None:
    """The parser's contract: a message, or ProtocolError with a documented code."""
    try:
        message = decode(raw)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES, exc
        return None
    # What one side accepts the other can send back unchanged (one check() for both ways).
    assert decode(encode(message)) == message
    assert_within_bounds(message)
    return message


def assert_within_bounds(value: Any) -> None:
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        if f.name.endswith("_ms") and item is not None:
            assert type(item) is int and 0 <= item <= MAX_TIME_MS, (f.name, item)
        if f.name == "decision" and item is not None:
            assert item in wire.DECISIONS
        if isinstance(item, str):
            assert len(item) <= wire.MAX_MESSAGE_CHARS
            item.encode("utf-8")  # no lone surrogates
        if dataclasses.is_dataclass(item):
            assert_within_bounds(item)
        if isinstance(item, tuple):
            for part in item:
                if dataclasses.is_dataclass(part):
                    assert_within_bounds(part)


def check_peek(raw: str | bytes) -> None:
    frame_id = peek_id(raw)
    if frame_id is not None:  # a host must be able to echo it in an error frame
        encode(Error(id="e0", code="malformed_json", message="", of=frame_id))


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-1, 2).map(lambda k: MAX_TIME_MS + k),
    st.floats(),
    st.text(st.characters(exclude_categories=()), max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _repeat(char: str, n: int) -> str:
    return char * n


near_limit_texts = st.builds(
    _repeat, st.sampled_from(["a", "é", "😀", "\n", " ", "A"]), st.sampled_from([1, 63, 64, 65, 200, 201, 2000, 2001])
)
# Values a field is likely to be tested against: right types, edge values, choices, anything.
wild_values = st.one_of(
    ids,
    times,
    st.sampled_from([-1, 0, 1, 999, 1_000, 3_600_000, 3_600_001, MAX_TIME_MS, MAX_TIME_MS + 1, 2**53, True, False]),
    st.sampled_from([*wire.DECISIONS, *wire.NO_USER_POLICIES, *wire.RUNTIME_STATUSES, "cancelled", "superseded"]),
    near_limit_texts,
    json_values,
)


def _prompt_like() -> st.SearchStrategy[dict[str, Any]]:
    names = [f.name for f in dataclasses.fields(PromptCopy)]
    return st.fixed_dictionaries({}, optional={name: wild_values for name in names})


def _frame_like(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {f.name: wild_values for f in dataclasses.fields(cls)}
    if cls is PromptDeliver:
        fields["prompt"] = _prompt_like() | wild_values
    if cls is StateReport:
        held = st.fixed_dictionaries(
            {}, optional={**{f.name: wild_values for f in dataclasses.fields(HeldPrompt)}, "prompt": _prompt_like()}
        )
        fields["prompts"] = st.lists(held, max_size=3) | wild_values
    envelope = {"v": st.just(1) | json_scalars, "type": st.just(cls.TYPE)}
    return st.fixed_dictionaries(envelope, optional=fields)


frame_like_dicts = st.one_of([_frame_like(cls) for cls in MESSAGE_TYPES.values()])

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_binary(raw: bytes) -> None:
    decode_or_refuse(raw)
    check_peek(raw)


@FUZZ
@given(st.text(st.characters(exclude_categories=()), max_size=200))
def test_fuzz_text_including_lone_surrogates(raw: str) -> None:
    decode_or_refuse(raw)
    check_peek(raw)


@FUZZ
@given(json_values)
def test_fuzz_arbitrary_json(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False)
    decode_or_refuse(text)
    decode_or_refuse(json.dumps(value).encode())
    check_peek(text)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_like_dicts)
def test_fuzz_frame_like_objects(body: dict[str, Any]) -> None:
    decode_or_refuse(json.dumps(body, ensure_ascii=False))
    check_peek(json.dumps(body))


def field_paths(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key and list index in a JSON body, as paths for ``with_value``."""
    items: list[tuple[str | int, Any]] = []
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    paths = []
    for key, child in items:
        paths.append((*path, key))
        paths.extend(field_paths(child, (*path, key)))
    return paths


@st.composite
def mutated_frames(draw: st.DrawFn) -> dict[str, Any]:
    """A valid frame with one to three fields (top level or nested) replaced or removed."""
    body = body_of(draw(frames))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(field_paths(body)))
        removable = isinstance(path[-1], str)
        body = with_value(body, path, draw(wild_values | st.just(...)) if removable else draw(wild_values))
    return body


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames())
def test_fuzz_mutated_valid_frames(body: dict[str, Any]) -> None:
    decode_or_refuse(json.dumps(body, ensure_ascii=False))
