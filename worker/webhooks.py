"""Outbound events (DESIGN §11, issue 13): payloads, Standard Webhooks signing, the retry
schedule and the check of a target URL — pure functions the actors and both hosts call.

Signing follows the Standard Webhooks convention: a secret is ``whsec_`` + base64 of random
bytes, and the HMAC key is those bytes (the base64 part decoded); each attempt carries

    webhook-id: <the event's id, the same on every retry>
    webhook-timestamp: <the attempt's time, integer epoch seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>

The body is the same bytes on every attempt: ``{"type", "timestamp", "data"}``, built once
when the event is committed (``envelope``).

Targets (``target_problem``): only http(s) URLs without credentials; https unless private
targets are allowed; a host that is an IP literal — in any form a WHATWG URL parser (a
browser's, the Workers runtime's ``fetch``) reads as an address, such as ``0x7f.1`` or
``2130706433`` — must be a public unicast address (IPv4, IPv6, IPv4-mapped, NAT64 and 6to4
included); ``localhost`` names are refused. A name is resolved and checked again at send
time by the local host (``worker.webhook_sender``); Cloudflare's ``fetch`` cannot reach
private addresses at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from caisey.clock import to_rfc3339

# The data of every ``prompt.*`` event: these fields of the prompt object (README: "Webhooks").
PROMPT_DATA_FIELDS = (
    "endpoint_id",
    "prompt_id",
    "state",
    "final",
    "provisional",
    "reason",
    "title",
    "action",
    "on_no_user",
    "created_by",
    "created_at",
    "expires_at",
    "decision",
    "decided_at",
    "decided_how",
    "decision_signature",
    "outcome",  # issue 16: user | locked | no_user (who or what answered)
    "cancelled_by",
    "supersedes",
    "superseded_by",
    "final_at",
    "escalated_at",
    # Issue 16: the technician's reason and ticket (DESIGN §13).
    "request_reason",
    "ticket",
)

SECRET_PREFIX = "whsec_"
# 24 random bytes: the Standard Webhooks libraries accept 24 to 64.
SECRET_BYTES = 24
EVENT_TYPES = (
    "prompt.created",
    "prompt.delivered",
    "prompt.final",
    "prompt.escalated",
    "endpoint.offline",
    "endpoint.online",
    # Issue 16: approval windows (``worker.approval_windows``).
    "window.started",
    "window.ended",
    "window.revoked",
)
# A deployment's subscriptions are read by every endpoint with events to send: a few dozen
# (a PSA, a chat channel or two per MSP) is plenty, and bounds that read.
MAX_SUBSCRIPTIONS = 50
MAX_URL_CHARS = 2000
MAX_DESCRIPTION_CHARS = 200
MAX_ERROR_CHARS = 300
# One attempt may take this long (connect to answer); then it counts as failed and is retried.
ATTEMPT_TIMEOUT_MS = 10_000
# Full-jitter exponential backoff after a failed attempt: delay = uniform(0, min(cap, base·2^n)),
# until GIVE_UP_AFTER_MS after the first attempt (BridgeConfig may change base and cap).
RETRY_BASE_MS = 5_000
RETRY_CAP_MS = 60 * 60_000
# An attempt handed to the host is not handed out again for this long: it has certainly ended
# by then (answered, or timed out), so only a host that died mid-attempt leaves a row for the
# lease to bring back.
LEASE_MS = ATTEMPT_TIMEOUT_MS + 5_000
GIVE_UP_AFTER_MS = 24 * 3_600_000
# How many deliveries an endpoint hands to its host per alarm: a backlog after an outage
# drains in batches instead of opening hundreds of connections at once.
MAX_SENDS_PER_ALARM = 32
USER_AGENT = "caisey-webhooks/1"


def new_secret(random_bytes: bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(random_bytes).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: its base64 part, decoded."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, now_ms: int, body: bytes) -> dict[str, str]:
    timestamp_s = now_ms // 1000
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature(secret, msg_id, timestamp_s, body),
    }


def envelope(event_type: str, at_ms: int, data: dict[str, Any]) -> str:
    """The body of an event, built once and sent as these bytes on every attempt."""
    assert event_type in EVENT_TYPES or event_type == "webhook.test"
    return json.dumps({"type": event_type, "timestamp": to_rfc3339(at_ms), "data": data}, separators=(",", ":"))


def retry_delay_ms(attempt: int, uniform: float, base_ms: int = RETRY_BASE_MS, cap_ms: int = RETRY_CAP_MS) -> int:
    """Milliseconds after failed attempt number ``attempt`` (1-based) before the next one."""
    ceiling = cap_ms if attempt >= 40 else min(cap_ms, base_ms * 2 ** (attempt - 1))
    return max(1, int(uniform * ceiling))


def duration_words(ms: int) -> str:
    """``45 s``, ``10 min``, ``2 h 5 min`` — how the console words a span."""
    seconds = max(0, ms // 1000)
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


# --- targets -----------------------------------------------------------------------------------


def _ipv4_number(part: str) -> int | None:
    """One part of a WHATWG IPv4 host: decimal, ``0x`` hex or ``0`` octal; None if not a number."""
    if part[:2].lower() == "0x":
        digits, radix = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        digits, radix = part[1:], 8
    else:
        digits, radix = part, 10
    if digits == "":
        return 0
    try:
        return int(digits, radix) if digits.isascii() and digits.isalnum() else None
    except ValueError:
        return None


def whatwg_ipv4(host: str) -> ipaddress.IPv4Address | str | None:
    """The address a WHATWG URL parser reads ``host`` as, None when it reads a name, or a
    problem (str) when it reads an invalid address. ``127.1``, ``0x7f.0.0.1``,
    ``2130706433`` and ``0177.0.0.1`` all are 127.0.0.1 to ``fetch``."""
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if not parts:
        return None
    last = parts[-1]
    ends_in_number = last != "" and (
        all(c in "0123456789" for c in last)
        or (last[:2].lower() == "0x" and all(c in "0123456789abcdefABCDEF" for c in last[2:]))
    )
    if not ends_in_number:
        return None
    if len(parts) > 4:
        return "not an IPv4 address"
    numbers = [_ipv4_number(p) for p in parts]
    if any(n is None for n in numbers):
        return "not an IPv4 address"
    values = [int(n) for n in numbers if n is not None]
    if any(v > 255 for v in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        return "not an IPv4 address"
    address = values[-1]
    for i, v in enumerate(values[:-1]):
        address += v << (8 * (3 - i))
    return ipaddress.IPv4Address(address)


GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")


def address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not go to ``address`` (loopback, private, link-local, …), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            problem = address_problem(embedded)
            return f"{address} embeds {embedded}: {problem}" if problem else None
        # Anything else outside global unicast (2000::/3) is refused outright: the local-use
        # NAT64 prefix 64:ff9b:1::/48 and SIIT's ::ffff:0:0/96 embed IPv4 addresses, and
        # site-local fec0::/10 is private, yet ``ipaddress`` calls none of them private (review F3).
        if address not in GLOBAL_UNICAST_V6:
            return f"{address} is outside global unicast IPv6 (2000::/3)"
    if address.is_loopback:
        return f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if address.is_unspecified:
        return f"{address} is the unspecified address"
    if address.is_private or not address.is_global:
        return f"{address} is a private or reserved address"
    return None


def target_problem(url: object, allow_private: bool) -> str | None:
    """Why ``url`` cannot be a webhook target, or None when it can."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        return f"url must be a string of 1-{MAX_URL_CHARS} characters"
    if not url.isascii() or any(ord(c) <= 32 or ord(c) == 127 for c in url):
        return "url must be ASCII without spaces or control characters (write an international name as punycode)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "url is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "url must be an http or https URL"
    if parts.scheme != "https" and not allow_private:
        return "url must be https"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "url must not carry credentials"
    if port == 0:
        return "url has port 0"
    host = parts.hostname or ""
    if not host:
        return "url has no host"
    if "%" in host or "\\" in url:
        return "url host must not be percent-encoded"
    if allow_private:
        return None
    if parts.netloc.split(":")[0].startswith("[") or ":" in host:
        try:
            v6 = ipaddress.IPv6Address(host)
        except ValueError:
            return "url host is not a valid IPv6 address (zone ids are refused)"
        return address_problem(v6)
    v4 = whatwg_ipv4(host)
    if isinstance(v4, str):
        return f"url host {host!r} is {v4}"
    if v4 is not None:
        return address_problem(v4)
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost") or "." not in name:
        return f"url host {host!r} is a local name"
    return None
