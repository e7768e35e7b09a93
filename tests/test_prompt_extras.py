"""The optional prompt fields (DESIGN §13): their shapes on the wire and their place in the hash."""

from __future__ import annotations

import hashlib

import pytest

from caisey import wire
from caisey.errors import ProtocolError
from caisey.signing import PROMPT_TAG, PROMPT_V2_TAG, copy_sha256, length_prefixed

BASE = dict(
    prompt_id="p1",
    title="Allow remote control?",
    message="",
    action="remote_control",
    created_at_ms=1,
    expires_at_ms=2,
    on_no_user="deny",
    requested_by="alice",
)
LOGO = "iVBORw0KGgoAAAANSUhEUg=="


def test_a_prompt_without_extras_hashes_and_travels_as_before() -> None:
    copy = wire.PromptCopy(**BASE)
    v1 = length_prefixed(PROMPT_TAG, "Allow remote control?", "", "remote_control", 2, "alice", "deny")
    assert copy_sha256(copy) == hashlib.sha256(v1).hexdigest()
    frame = wire.encode(wire.PromptDeliver("d1", copy))
    assert "reason" not in frame and "grant_minutes" not in frame


def test_extras_round_trip_and_change_the_hash_under_v2() -> None:
    copy = wire.PromptCopy(
        **BASE,
        reason="printer queue stuck",
        ticket_id="T-42",
        ticket_url="https://tickets.example/T-42",
        grant_minutes=30,
        on_locked="no_user",
        brand_name="Acme IT",
        brand_logo_png=LOGO,
    )
    again = wire.decode(wire.encode(wire.PromptDeliver("d1", copy)))
    assert isinstance(again, wire.PromptDeliver) and again.prompt == copy
    logo_hash = hashlib.sha256(LOGO.encode()).hexdigest()
    v2 = length_prefixed(
        PROMPT_V2_TAG,
        *("Allow remote control?", "", "remote_control", 2, "alice", "deny"),
        *("printer queue stuck", "T-42", "https://tickets.example/T-42", 30, "no_user", "Acme IT", logo_hash),
    )
    assert copy_sha256(copy) == hashlib.sha256(v2).hexdigest()
    # A report line carries the logo's hash instead of its bytes: the same prompt, the same hash.
    slim = copy.without_logo()
    assert slim.brand_logo_png is None and slim.brand_logo_sha256 == logo_hash
    assert copy_sha256(slim) == copy_sha256(copy)
    assert wire.decode(wire.encode(wire.PromptDeliver("d1", slim))) == wire.PromptDeliver("d1", slim)
    assert copy_sha256(copy) != copy_sha256(wire.PromptCopy(**BASE, reason="printer queue stuck!"))


@pytest.mark.parametrize(
    "extra",
    [
        {"reason": ""},
        {"reason": "x" * (wire.MAX_REASON_CHARS + 1)},
        {"ticket_url": "https://t.example/1"},  # a URL without a ticket id
        {"ticket_id": "T-1", "ticket_url": "javascript:alert(1)"},
        {"ticket_id": "T-1", "ticket_url": "https://t.example/a b"},
        {"grant_minutes": 0},
        {"grant_minutes": wire.MAX_GRANT_MINUTES + 1},
        {"grant_minutes": True},
        {"on_locked": "approve"},
        {"brand_logo_png": "R0lGODlh"},  # a GIF
        {"brand_logo_png": LOGO + "!"},
        {"brand_logo_sha256": "AB" * 32},
        {"brand_logo_png": LOGO, "brand_logo_sha256": "ab" * 32},  # not the logo's hash
    ],
)
def test_bad_extras_are_refused(extra: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        wire.PromptCopy(**BASE, **extra)  # type: ignore[arg-type]


def test_a_full_report_of_prompts_with_the_largest_logo_fits_a_frame() -> None:
    """Report lines carry a logo's hash, not its bytes: 100 open prompts of one client with a
    16 KiB logo made a 1.6 MB report, which the bridge refuses as too large — forever."""
    logo = LOGO.rstrip("=") + "A" * (wire.MAX_BRAND_LOGO_CHARS - len(LOGO))
    copies = [
        wire.PromptCopy(**{**BASE, "prompt_id": f"p{i}"}, brand_name="Acme IT", brand_logo_png=logo)
        for i in range(wire.MAX_OPEN_PROMPTS)
    ]
    lines = [wire.HeldPrompt(copy.without_logo(), "received") for copy in copies]
    frame = wire.encode(wire.StateReport("r1", tuple(lines), "0" * 64))
    assert len(frame.encode()) < wire.MAX_FRAME_BYTES
    assert all(copy_sha256(line.prompt) == copy_sha256(copy) for line, copy in zip(lines, copies, strict=True))
