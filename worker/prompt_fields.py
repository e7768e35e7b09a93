"""A prompt create's body, validated into ``Created`` fields (DESIGN §8 ``POST .../prompts``),
plus its ``escalate_after`` (DESIGN §11).

Pure: the body and the bridge's clock and limits in, the fields or ``ApiError`` 400 out.
``config`` is the actor's ``BridgeConfig`` (its ``min_expires_in_ms``, ``max_expires_in_ms``
and ``default_expires_in_ms``).
"""

from __future__ import annotations

from typing import Any

from caisey import wire
from caisey.clock import from_rfc3339
from caisey.errors import ProtocolError
from caisey.facts import NoUserPolicy
from caisey.text import check as text_problem
from worker.api import ApiError

DAY_MS = 86_400_000
# expires_in beyond this is refused before any arithmetic (a float's * 1000 overflows to inf,
# and int(inf) raises); the lifetime bounds in BridgeConfig then apply. 10**12 s ≈ 31,700 years.
MAX_EXPIRES_IN_S = 10**12
# escalate_after (seconds): at least 5 s (as a prompt's shortest life), at most 7 days (its longest).
MIN_ESCALATE_AFTER_S = 5
MAX_ESCALATE_AFTER_S = 7 * 86_400


def escalate_after(value: object) -> int:
    """``escalate_after`` in seconds → milliseconds, or 400 ``invalid_field``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not MIN_ESCALATE_AFTER_S <= value <= MAX_ESCALATE_AFTER_S  # also NaN and ±Infinity
    ):
        raise ApiError(
            400,
            "invalid_field",
            f"escalate_after must be a number of seconds from {MIN_ESCALATE_AFTER_S} to {MAX_ESCALATE_AFTER_S}",
        )
    return int(value * 1000)


def grant_minutes(value: object) -> int | None:
    """``grant_minutes`` (DESIGN §13: the approval window asked for) or 400 ``invalid_field``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= wire.MAX_GRANT_MINUTES:
        raise ApiError(
            400, "invalid_field", f"grant_minutes must be a whole number of minutes from 1 to {wire.MAX_GRANT_MINUTES}"
        )
    return value


def prompt_fields(
    body: dict[str, Any], now_ms: int, config: Any, default_escalate_after_ms: int | None
) -> dict[str, Any]:
    """Validate a create body into ``Created`` fields; 400 with the field named otherwise."""

    def text(name: str, limit: int, *, required: bool) -> str:
        value = body.get(name, None if required else "")
        if not isinstance(value, str) or (required and not value.strip()):
            raise ApiError(400, "invalid_field", f"{name} must be a non-empty string")
        if len(value) > limit:
            raise ApiError(400, "field_too_long", f"{name} has {len(value)} characters; the limit is {limit}")
        problem = text_problem(value, name, multiline=name == "message")  # controls, lone surrogates
        if problem is not None:
            raise ApiError(400, "invalid_field", problem)
        return value

    title = text("title", wire.MAX_TITLE_CHARS, required=True)
    message = text("message", wire.MAX_MESSAGE_CHARS, required=False)
    action = text("action", wire.MAX_ACTION_CHARS, required=True)
    policy = body.get("on_no_user", NoUserPolicy.WAIT.value)
    if policy not in wire.NO_USER_POLICIES:
        raise ApiError(400, "invalid_field", f"on_no_user must be one of {', '.join(wire.NO_USER_POLICIES)}")
    if "expires_in" in body and "expires_at" in body:
        raise ApiError(400, "invalid_field", "give expires_in or expires_at, not both")
    if "expires_at" in body:
        if not isinstance(body["expires_at"], str):
            raise ApiError(400, "invalid_field", "expires_at must be an RFC 3339 time")
        try:
            expires_at_ms = from_rfc3339(body["expires_at"])
        except ProtocolError as exc:
            raise ApiError(400, "invalid_field", exc.message) from None
    else:
        seconds = body.get("expires_in", config.default_expires_in_ms // 1000)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ApiError(400, "invalid_field", "expires_in must be a number of seconds")
        if not -MAX_EXPIRES_IN_S <= seconds <= MAX_EXPIRES_IN_S:  # also NaN, ±Infinity, 1e308
            raise ApiError(400, "invalid_expiry", "expires_in must be a finite number of seconds")
        expires_at_ms = now_ms + int(seconds * 1000)
    lifetime = expires_at_ms - now_ms
    if not config.min_expires_in_ms <= lifetime <= config.max_expires_in_ms:
        raise ApiError(
            400,
            "invalid_expiry",
            f"a prompt must expire between {config.min_expires_in_ms // 1000} s and "
            f"{config.max_expires_in_ms // DAY_MS} days from now",
        )
    escalate_after_ms = default_escalate_after_ms
    if body.get("escalate_after") is not None:
        escalate_after_ms = escalate_after(body["escalate_after"])
    return {
        "escalate_after_ms": escalate_after_ms,
        "title": title,
        "message": message,
        "action": action,
        "on_no_user": policy,
        "expires_at_ms": expires_at_ms,
        "grant_minutes": grant_minutes(body.get("grant_minutes")),
    }


def retry_body(old: Any, body: dict[str, Any]) -> dict[str, Any]:
    """A retry's create body: the old prompt's fields (``old``, its view; ``expires_in`` as its
    lifetime; its reason, ticket and window asked for, DESIGN §13), overridden by the retry's ``body``."""
    merged: dict[str, Any] = {
        "title": old.title,
        "message": old.message,
        "action": old.action,
        "on_no_user": old.on_no_user,
        "expires_in": max(1, (old.expires_at_ms - old.created_at_ms) // 1000),
    }
    if "reason" in old.extras:
        merged["reason"] = old.extras["reason"]
    if "grant_minutes" in old.extras:
        merged["grant_minutes"] = old.extras["grant_minutes"]
    if "ticket_id" in old.extras:
        merged["ticket"] = {"id": old.extras["ticket_id"], "url": old.extras.get("ticket_url")}
    merged.update({k: v for k, v in body.items() if k in merged or k in RETRY_MAY_ADD})
    if "expires_at" in body:
        merged.pop("expires_in", None)
    return merged


# Besides the old prompt's fields, what a retry's body may set.
RETRY_MAY_ADD = ("expires_at", "escalate_after", "reason", "ticket", "grant_minutes")
