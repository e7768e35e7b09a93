"""The endpoint actor's SQLite schema and the additive migrations that reach it.

STYLE: schema on every wake, versioned, additive — ``migrate`` runs what is newer than the
stored version, each version in one transaction, on every construction (a Durable Object is
constructed again after hibernation; a migrated store costs one read). The fleet index uses
``migrate`` with its own list.
"""

from __future__ import annotations

from collections.abc import Callable

from worker.approval_windows import WINDOWS_MIGRATION
from worker.audit_chain import backfill
from worker.endpoint_stats import STATS_MIGRATION
from worker.host import SqlStore

# A migration step is a statement, or a function of the store for what SQL alone cannot do.
Migration = str | Callable[[SqlStore], None]

# Migrations only add (STYLE: schema on every wake, versioned, additive).
MIGRATIONS: dict[int, list[Migration]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
        """CREATE TABLE IF NOT EXISTS prompts (
            prompt_id TEXT PRIMARY KEY, created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL,
            deliver_id TEXT NOT NULL, state TEXT NOT NULL, final INTEGER NOT NULL,
            final_at_ms INTEGER, next_moment_ms INTEGER)""",
        "CREATE INDEX IF NOT EXISTS prompts_open ON prompts (final, next_moment_ms)",
        """CREATE TABLE IF NOT EXISTS facts (
            seq INTEGER PRIMARY KEY, prompt_id TEXT NOT NULL, at_ms INTEGER NOT NULL,
            kind TEXT NOT NULL, fields TEXT NOT NULL, event_id TEXT)""",
        "CREATE INDEX IF NOT EXISTS facts_by_prompt ON facts (prompt_id, seq)",
        """CREATE TABLE IF NOT EXISTS outbox (
            event_id TEXT PRIMARY KEY, prompt_id TEXT NOT NULL, kind TEXT NOT NULL, frame TEXT NOT NULL,
            attempts INTEGER NOT NULL, next_attempt_at_ms INTEGER NOT NULL)""",
        "CREATE TABLE IF NOT EXISTS seen_events (event_id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL)",
        """CREATE TABLE IF NOT EXISTS idempotency (
            key TEXT PRIMARY KEY, body_hash TEXT NOT NULL, prompt_id TEXT NOT NULL, purge_at_ms INTEGER NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS enrollments (
            token_hash TEXT PRIMARY KEY, expires_at_ms INTEGER NOT NULL, used_at_ms INTEGER)""",
    ],
    # The fleet line's last outcome is read after every event: without this index that read
    # sorted every final prompt the endpoint ever had, so each event cost O(history).
    2: ["CREATE INDEX IF NOT EXISTS prompts_final_at ON prompts (final, final_at_ms, prompt_id)"],
    # What the runtime holds of each prompt (``runtime_status`` of its view, '' for nothing),
    # stored by ``_refresh`` so a heartbeat's digest is one read instead of a reconcile per open
    # prompt. A final prompt holds nothing, ever; NULL (an open prompt from before this
    # migration) is derived from its facts when read, and stored at its next refresh.
    3: [
        "ALTER TABLE prompts ADD COLUMN runtime_status TEXT",
        "UPDATE prompts SET runtime_status = '' WHERE final = 1",
    ],
    # Consent you can prove (DESIGN §10): the endpoint's signing keys, who issued each
    # enrollment, and the hash chain over every fact (rows from before it linked once here).
    4: [
        "ALTER TABLE facts ADD COLUMN hash TEXT",
        """CREATE TABLE IF NOT EXISTS endpoint_keys (
            key_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, valid_from_ms INTEGER NOT NULL,
            valid_until_ms INTEGER, registered_by TEXT NOT NULL)""",
        "ALTER TABLE enrollments ADD COLUMN created_by TEXT",
        "ALTER TABLE enrollments ADD COLUMN rekey INTEGER NOT NULL DEFAULT 0",
        backfill,
    ],
    # Outbound events and escalation (DESIGN §11, ``worker.hooks``): each prompt's escalation
    # time and what was announced of it (prompts from before: everything so far announced),
    # the events waiting for their first send, and one delivery row per subscription.
    5: [
        "ALTER TABLE prompts ADD COLUMN escalate_after_ms INTEGER",
        "ALTER TABLE prompts ADD COLUMN escalate_at_ms INTEGER",
        "ALTER TABLE prompts ADD COLUMN hook_marks TEXT",
        "UPDATE prompts SET hook_marks = 'cde|' || CASE WHEN final = 1 THEN state ELSE '' END",
        "CREATE INDEX IF NOT EXISTS prompts_escalate ON prompts (escalate_at_ms) WHERE escalate_at_ms IS NOT NULL",
        """CREATE TABLE IF NOT EXISTS webhook_events (
            event_id TEXT PRIMARY KEY, type TEXT NOT NULL, prompt_id TEXT NOT NULL, body TEXT NOT NULL,
            at_ms INTEGER NOT NULL, expanded INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX IF NOT EXISTS webhook_events_pending ON webhook_events (expanded, at_ms)",
        """CREATE TABLE IF NOT EXISTS webhook_deliveries (
            event_id TEXT NOT NULL, subscription_id TEXT NOT NULL, attempts INTEGER NOT NULL,
            first_at_ms INTEGER NOT NULL, next_at_ms INTEGER NOT NULL, last_status INTEGER, last_error TEXT,
            PRIMARY KEY (event_id, subscription_id))""",
        "CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_at_ms)",
    ],
    # Issue 14: statistics kept incrementally (``worker.endpoint_stats``).
    6: [*STATS_MIGRATION],
    # Issue 16: approval windows (``worker.approval_windows``); 7 is the display evidence's.
    8: [*WINDOWS_MIGRATION],
}
# The newest version, derived so that a migration added later cannot leave it behind.
SCHEMA_VERSION = max(MIGRATIONS)


def migrate(store: SqlStore, migrations: dict[int, list[Migration]]) -> None:
    """Apply the migrations newer than the stored schema version, each in one transaction."""
    store.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    rows = store.execute("SELECT value FROM meta WHERE key = 'schema_version'")
    current = int(rows[0]["value"]) if rows else 0
    for version in sorted(v for v in migrations if v > current):

        def step(version: int = version) -> None:
            for step_ in migrations[version]:
                if isinstance(step_, str):
                    store.execute(step_)
                else:
                    step_(store)
            store.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(version),),
            )

        store.transaction(step)
