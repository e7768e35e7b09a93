"""Webhook subscriptions and their delivery log, in the fleet index (DESIGN §11, issue 13).

``WebhookSubscriptions`` is part of ``FleetIndex`` (it shares its store): the admin routes
(create, list, delete, the test's prepared send), the fleet default ``escalate_after``
(``/api/settings``), and three internal calls — the endpoint actors read the enabled
subscriptions with their secrets (``TARGETS_PATH``) when they have events to send, post each
delivery outcome (``REPORT_PATH``), and the gateway reads the settings before a create
(``SETTINGS_PATH``). A signing secret is kept as it is (an HMAC needs it) and shown once;
no answer of the API carries it again.
"""

from __future__ import annotations

import json
import re
from typing import Any

from caisey import text
from caisey.clock import to_rfc3339
from worker import webhooks
from worker.api import TECHNICIAN_HEADER, ApiError, ApiRequest, ApiResponse
from worker.host import Entropy, SqlStore
from worker.prompt_fields import escalate_after

TARGETS_PATH = "/internal/webhook-targets"
REPORT_PATH = "/internal/webhook-report"
SETTINGS_PATH = "/internal/settings"
WEBHOOK_ID_RE = re.compile(r"^wh_[A-Za-z0-9_-]{1,40}$")
# Outcomes one report call may carry (an alarm hands out at most MAX_SENDS_PER_ALARM sends).
MAX_REPORTS = 256

MIGRATION: list[str] = [
    """CREATE TABLE IF NOT EXISTS webhooks (
        id TEXT PRIMARY KEY, url TEXT NOT NULL, events TEXT NOT NULL, description TEXT NOT NULL,
        secret TEXT NOT NULL, created_at_ms INTEGER NOT NULL, created_by TEXT NOT NULL,
        disabled_at_ms INTEGER, disabled_reason TEXT,
        last_event_id TEXT, last_type TEXT, last_endpoint_id TEXT, last_outcome TEXT, last_status INTEGER,
        last_error TEXT, last_attempts INTEGER, last_attempt_at_ms INTEGER, next_attempt_at_ms INTEGER,
        delivered INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, given_up INTEGER NOT NULL DEFAULT 0)""",
]


class WebhookSubscriptions:
    def __init__(self, store: SqlStore, entropy: Entropy) -> None:
        self.store = store
        self.entropy = entropy
        # Hosts set it: ``caisey-bridge serve --allow-private-webhooks``, ``ALLOW_PRIVATE_WEBHOOKS``.
        self.allow_private = False

    def _q(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return self.store.execute(sql, params)

    # --- admin routes ----------------------------------------------------------------------

    def create(self, req: ApiRequest, now_ms: int) -> ApiResponse:
        body = req.json()
        url = body.get("url")
        problem = webhooks.target_problem(url, self.allow_private)
        if problem is not None:
            if isinstance(url, str) and url:
                raise ApiError(400, "webhook_target_refused", problem)
            raise ApiError(400, "invalid_field", problem)
        events = body.get("events")
        if (
            not isinstance(events, list)
            or not events
            or any(not isinstance(e, str) or e not in webhooks.EVENT_TYPES for e in events)
            or len(set(events)) != len(events)
        ):
            raise ApiError(
                400,
                "invalid_field",
                "events must be a non-empty list of distinct event types: " + ", ".join(webhooks.EVENT_TYPES),
            )
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > webhooks.MAX_DESCRIPTION_CHARS:
            raise ApiError(
                400,
                "invalid_field",
                f"description must be a string of at most {webhooks.MAX_DESCRIPTION_CHARS} characters",
            )
        problem = text.check(description, "description")
        if problem is not None:
            raise ApiError(400, "invalid_field", problem)
        count = int(self._q("SELECT COUNT(*) AS n FROM webhooks")[0]["n"])
        if count >= webhooks.MAX_SUBSCRIPTIONS:
            raise ApiError(
                429,
                "too_many_webhooks",
                f"a deployment may have {webhooks.MAX_SUBSCRIPTIONS} webhooks; delete one first",
            )
        webhook_id = self.entropy.token("wh_", 12)
        secret = webhooks.new_secret(
            self.entropy.bits(8 * webhooks.SECRET_BYTES).to_bytes(webhooks.SECRET_BYTES, "big")
        )
        assert isinstance(url, str)
        self._q(
            "INSERT INTO webhooks (id, url, events, description, secret, created_at_ms, created_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            webhook_id,
            url,
            json.dumps(events),
            description,
            secret,
            now_ms,
            req.header(TECHNICIAN_HEADER) or "admin",
        )
        row = self._q("SELECT * FROM webhooks WHERE id = ?", webhook_id)[0]
        # The secret is shown once, here.
        return ApiResponse(201, dict(_public(row), secret=secret))

    def list(self) -> ApiResponse:
        rows = self._q("SELECT * FROM webhooks ORDER BY created_at_ms, id")
        return ApiResponse(200, {"webhooks": [_public(r) for r in rows]})

    def _row(self, webhook_id: str) -> dict[str, Any]:
        rows = self._q("SELECT * FROM webhooks WHERE id = ?", webhook_id) if WEBHOOK_ID_RE.fullmatch(webhook_id) else []
        if not rows:
            raise ApiError(404, "unknown_webhook", f"no webhook {webhook_id[:64]!r}")
        return rows[0]

    def delete(self, webhook_id: str) -> ApiResponse:
        self._row(webhook_id)
        self._q("DELETE FROM webhooks WHERE id = ?", webhook_id)
        return ApiResponse(200, {"id": webhook_id, "deleted": True})

    def prepare_test(self, webhook_id: str, now_ms: int) -> ApiResponse:
        """The send a test makes (the gateway performs it and reports the outcome): a
        ``webhook.test`` event, signed as every event is, to a subscription even if disabled."""
        row = self._row(webhook_id)
        event_id = "msg_" + self.entropy.token("", 12)
        body = webhooks.envelope(
            "webhook.test", now_ms, {"webhook_id": webhook_id, "message": "a test event from Caisey"}
        )
        send = {
            "event_id": event_id,
            "subscription_id": webhook_id,
            "url": row["url"],
            "headers": webhooks.headers(row["secret"], event_id, now_ms, body.encode()),
            "body": body,
        }
        return ApiResponse(200, {"send": send})

    # --- settings ------------------------------------------------------------------------------

    def default_escalate_after_ms(self) -> int | None:
        rows = self._q("SELECT value FROM meta WHERE key = 'default_escalate_after_ms'")
        return int(rows[0]["value"]) if rows and rows[0]["value"] else None

    def settings(self) -> dict[str, Any]:
        default = self.default_escalate_after_ms()
        return {"escalate_after": None if default is None else default // 1000}

    def set_settings(self, req: ApiRequest) -> ApiResponse:
        body = req.json()
        if "escalate_after" not in body:
            raise ApiError(400, "missing_field", "escalate_after (seconds, or null for none) is required")
        value = body["escalate_after"]
        stored = None if value is None else str(escalate_after(value))
        self._q(
            "INSERT INTO meta (key, value) VALUES ('default_escalate_after_ms', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            stored,
        )
        return ApiResponse(200, self.settings())

    # --- internal ------------------------------------------------------------------------------

    def listening(self) -> bool:
        """Whether any subscription is enabled (``Hooks.listening`` on the local host)."""
        return bool(self._q("SELECT 1 FROM webhooks WHERE disabled_at_ms IS NULL LIMIT 1"))

    def targets(self) -> list[dict[str, Any]]:
        rows = self._q("SELECT id, url, events, secret FROM webhooks WHERE disabled_at_ms IS NULL ORDER BY id")
        return [
            {"id": r["id"], "url": r["url"], "events": json.loads(r["events"]), "secret": r["secret"]} for r in rows
        ]

    def report(self, body: dict[str, Any], now_ms: int) -> ApiResponse:
        reports = body.get("reports")
        if not isinstance(reports, list) or len(reports) > MAX_REPORTS:
            raise ApiError(400, "invalid_field", "reports must be a list")
        for item in reports:
            if isinstance(item, dict):
                self._record(item, now_ms)
        return ApiResponse(204)

    def _record(self, item: dict[str, Any], now_ms: int) -> None:
        outcome = str(item.get("outcome"))
        counter = {"delivered": "delivered", "retrying": "failed", "gave_up": "given_up"}.get(outcome)
        self._q(
            "UPDATE webhooks SET last_event_id = ?, last_type = ?, last_endpoint_id = ?, last_outcome = ?, "
            "last_status = ?, last_error = ?, last_attempts = ?, last_attempt_at_ms = ?, next_attempt_at_ms = ?"
            + (f", {counter} = {counter} + 1" if counter else "")
            + " WHERE id = ?",
            _text(item.get("event_id")),
            _text(item.get("type")),
            _text(item.get("endpoint_id")),
            outcome[:20],
            item.get("status") if isinstance(item.get("status"), int) else None,
            _text(item.get("error")),
            item.get("attempts") if isinstance(item.get("attempts"), int) else None,
            item.get("at_ms") if isinstance(item.get("at_ms"), int) else now_ms,
            item.get("next_attempt_at_ms") if isinstance(item.get("next_attempt_at_ms"), int) else None,
            str(item.get("subscription_id")),
        )
        if outcome == "disabled":
            self._q(
                "UPDATE webhooks SET disabled_at_ms = ?, disabled_reason = ? WHERE id = ? AND disabled_at_ms IS NULL",
                now_ms,
                "the receiver answered 410 Gone",
                str(item.get("subscription_id")),
            )


def _text(value: object) -> str | None:
    return None if value is None else str(value)[: webhooks.MAX_ERROR_CHARS]


def _time(ms: Any) -> str | None:
    return None if ms is None else to_rfc3339(int(ms))


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A subscription as the API shows it: never its secret."""
    return {
        "id": row["id"],
        "url": row["url"],
        "events": json.loads(row["events"]),
        "description": row["description"],
        "created_at": to_rfc3339(int(row["created_at_ms"])),
        "created_by": row["created_by"],
        "enabled": row["disabled_at_ms"] is None,
        "disabled_at": _time(row["disabled_at_ms"]),
        "disabled_reason": row["disabled_reason"],
        "delivery": {
            "last_event_id": row["last_event_id"],
            "last_type": row["last_type"],
            "last_endpoint_id": row["last_endpoint_id"],
            "last_outcome": row["last_outcome"],
            "last_status": row["last_status"],
            "last_error": row["last_error"],
            "attempts": row["last_attempts"],
            "last_attempt_at": _time(row["last_attempt_at_ms"]),
            "next_attempt_at": _time(row["next_attempt_at_ms"]),
            "delivered": int(row["delivered"]),
            "failed_attempts": int(row["failed"]),
            "given_up": int(row["given_up"]),
        },
    }
