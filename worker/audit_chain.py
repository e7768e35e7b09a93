"""The endpoint actor's fact log as a hash chain (DESIGN §10; the format is ``caisey.audit``).

Every row of ``facts`` carries ``hash`` = link(previous row's hash, this row). Appends go
through ``AuditChain.append``, which numbers the row itself (``seq`` = head + 1) so a fact is
one INSERT with its hash; the head is read once and then kept across events (the actor is the
only writer of its facts: ``worker.actor_memory``) until a transaction rolls back (``forget``),
so a rolled-back append cannot leave a stale head behind. Rows from before the chain existed
are linked once by the migration (``backfill``).
"""

from __future__ import annotations

import json
from typing import Any

from caisey.audit import export_fact, export_head, export_header, genesis, link
from worker.host import SqlStore

# An export is read in pages of this many rows: memory stays bounded on a long history.
EXPORT_PAGE_ROWS = 500


class AuditChain:
    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._head: tuple[int, str] | None = None  # (seq, hash) as last read or appended

    def forget(self) -> None:
        """Drop the remembered head (a transaction rolled back)."""
        self._head = None

    def head(self, endpoint_id: str) -> tuple[int, str]:
        """``(seq, hash)`` of the last fact; ``(0, genesis)`` before the first."""
        head = self._head
        if head is None:
            rows = self.store.execute("SELECT seq, hash FROM facts ORDER BY seq DESC LIMIT 1")
            head = self._head = (int(rows[0]["seq"]), str(rows[0]["hash"])) if rows else (0, "")
        if head[0] == 0:  # no fact yet: the genesis of the endpoint as registered now
            return 0, genesis(endpoint_id)
        return head

    def append(
        self,
        endpoint_id: str,
        prompt_id: str,
        at_ms: int,
        kind: str,
        fields: dict[str, Any],
        event_id: str | None,
        *,
        cache: bool,
    ) -> int:
        """Insert one fact with its link; returns its ``seq``. ``cache``: inside an event (the
        head is remembered only where a rollback reaches ``forget``)."""
        last_seq, last_hash = self.head(endpoint_id)
        seq = last_seq + 1
        digest = link(last_hash, seq, prompt_id, at_ms, kind, fields, event_id)
        self.store.execute(
            "INSERT INTO facts (seq, prompt_id, at_ms, kind, fields, event_id, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, prompt_id, at_ms, kind, json.dumps(fields, separators=(",", ":")), event_id, digest),
        )
        self._head = (seq, digest) if cache else None
        return seq

    def export_lines(self, endpoint_id: str, now_ms: int) -> list[str]:
        """The JSON Lines export: header, every fact with its hash, head."""
        lines = [json.dumps(export_header(endpoint_id, now_ms), separators=(",", ":"))]
        after, count, head = 0, 0, genesis(endpoint_id)
        while True:
            rows = self.store.execute(
                "SELECT seq, prompt_id, at_ms, kind, fields, event_id, hash FROM facts WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, EXPORT_PAGE_ROWS),
            )
            for row in rows:
                lines.append(json.dumps(export_fact(row), separators=(",", ":"), ensure_ascii=False))
            count += len(rows)
            if rows:
                after, head = int(rows[-1]["seq"]), str(rows[-1]["hash"])
            if len(rows) < EXPORT_PAGE_ROWS:
                break
        lines.append(json.dumps(export_head(after, head, count), separators=(",", ":")))
        return lines


def backfill(store: SqlStore) -> None:
    """Migration step: link the rows written before the chain, in ``seq`` order."""
    rows = store.execute("SELECT value FROM meta WHERE key = 'endpoint_id'")
    endpoint_id = str(rows[0]["value"]) if rows and rows[0]["value"] is not None else ""
    previous, after = genesis(endpoint_id), 0
    while True:
        page = store.execute(
            "SELECT seq, prompt_id, at_ms, kind, fields, event_id FROM facts WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, EXPORT_PAGE_ROWS),
        )
        for row in page:
            seq = int(row["seq"])
            fields = json.loads(row["fields"])
            previous = link(previous, seq, row["prompt_id"], int(row["at_ms"]), row["kind"], fields, row["event_id"])
            store.execute("UPDATE facts SET hash = ? WHERE seq = ?", (previous, seq))
            after = seq
        if len(page) < EXPORT_PAGE_ROWS:
            return


__all__ = ["AuditChain", "backfill"]
