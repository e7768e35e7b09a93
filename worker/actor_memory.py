"""What the endpoint actor keeps in memory across events (issue 15: CPU per event).

``ActorMemory`` is part of ``EndpointBridge`` (a mixin). An event used to start by reading
again what the previous event had just read or written: every ``meta`` row, the hash chain's
head, the prompt's facts, the endpoint's keys. They are now kept on the actor object from one
event to the next, because **the actor is the only writer of its own tables**: a Durable
Object's storage is written by that object alone, and the local host runs one actor per
endpoint (a shard's other endpoints have their own, prefixed tables). So what this object read
or wrote at the end of one event is what the rows hold at the start of the next.

What is kept (each where it is used, all dropped together by ``_forget``):

- ``meta`` as key → value (``_meta``); keys an event sets are written once, together, at its
  end (``_write_meta``, inside its transaction);
- per prompt, for the newest ``MAX_REMEMBERED_PROMPTS``: its facts (``_facts``), the derived
  columns ``_refresh`` last wrote (``_derived``: an unchanged refresh writes nothing), its
  statistics row (``_stats_rows``, ``worker.endpoint_stats``), its hook columns (``_hook_rows``,
  ``worker.hooks``);
- the earliest next attempt of the outbox and the earliest escalation, as lower bounds
  (``worker.outbox``, ``worker.hooks``);
- the hash chain's head (``worker.audit_chain``) and the endpoint's keys (``worker.endpoint_keys``).

The rules that keep the memory equal to the rows:

- write-through: every write of a remembered row goes through the code that remembers it
  (``_set_meta``; ``AuditChain.append``; ``EndpointBridge._append``; ``EndpointKeys.register``),
  and the memory is updated only after the statement succeeded;
- a transaction that rolls back takes back writes the memory already holds: ``_forget`` drops
  all of it (``EndpointBridge._atomically`` calls it on any exception), and the next event
  reads the rows again;
- a new object (a Durable Object woken from hibernation, a restarted host) starts empty.

What is remembered changes no row, frame, response or fact: each is the value a read would
give. Outside events a ``meta`` read still goes to the table until an event loaded the rows.
"""

from __future__ import annotations

from typing import Any

from caisey.facts import Entry

# Prompts whose facts are remembered across events: the ones a round trip touches again (its
# receipt, its decision, their acks) are the newest; older ones are read again when needed.
MAX_REMEMBERED_PROMPTS = 64
# meta keys written per statement at the end of an event (two bound values each).
META_PER_STATEMENT = 40


class ActorMemory:
    """The actor's memory of its own rows across events; mixed into ``EndpointBridge``."""

    # Provided by EndpointBridge.
    _q: Any
    _in_event: bool
    chain: Any
    keys: Any
    _outbox_due: float | None
    _escalate_due: float | None

    # ``meta`` as key → value once an event read it (None: not loaded).
    _meta_rows: dict[str, str | None] | None = None

    def _init_memory(self) -> None:
        self._meta_rows = None
        self._meta_unwritten: dict[str, str | None] = {}  # set in this event, written at its end
        # Per prompt, for the newest ``MAX_REMEMBERED_PROMPTS`` of them:
        # - its committed entries in ``seq`` order (``_append`` extends them);
        self._facts: dict[str, list[Entry]] = {}
        # - the derived columns ``_refresh`` last wrote (written again only when they change);
        self._derived: dict[str, tuple[Any, ...]] = {}
        # - its ``stats_prompts`` row as (day, hour, reissued, outcome, latencies), None when it
        #   has none (``EndpointStatsOps._observe_stats``; cleared by the statistics' housekeeping).
        self._stats_rows: dict[str, tuple[int, int, int, str | None, int] | None] = {}
        # - its hook columns (prompt_id, hook_marks, escalate_after_ms, escalate_at_ms) as a row
        #   ``worker.hooks`` reads and updates in place with its writes.
        self._hook_rows: dict[str, dict[str, Any]] = {}

    def _forget(self) -> None:
        """Drop everything remembered (a transaction rolled back; see the module docstring)."""
        self._meta_rows = None
        self._meta_unwritten.clear()
        self._facts.clear()
        self._derived.clear()
        self._stats_rows.clear()
        self._hook_rows.clear()
        self._outbox_due = None  # ``worker.outbox``
        self._escalate_due = None  # ``worker.hooks``
        self.chain.forget()
        self.keys.forget()

    def _new_prompt(self, prompt_id: str) -> None:
        """A prompt this event created with a fresh id: it has no facts and no statistics yet."""
        self._facts[prompt_id] = []
        self._stats_rows[prompt_id] = None
        self._hook_rows[prompt_id] = {
            "prompt_id": prompt_id,
            "hook_marks": None,
            "escalate_after_ms": None,
            "escalate_at_ms": None,
        }

    def _trim_memory(self) -> None:
        """At the end of an event: keep what is remembered of the newest prompts only (rebuilt
        at twice the size: deleting a dict's first keys one by one slows its iteration)."""
        for memory in (self._facts, self._derived, self._stats_rows, self._hook_rows):
            if len(memory) > 2 * MAX_REMEMBERED_PROMPTS:
                kept = list(memory.items())[-MAX_REMEMBERED_PROMPTS:]
                memory.clear()
                memory.update(kept)

    def _meta(self, key: str) -> str | None:
        rows = self._meta_rows
        if rows is None:
            if not self._in_event:
                found = self._q("SELECT value FROM meta WHERE key = ?", key)
                return found[0]["value"] if found else None
            rows = self._meta_rows = {r["key"]: r["value"] for r in self._q("SELECT key, value FROM meta")}
        return rows.get(key)

    def _set_meta(self, key: str, value: str | None) -> None:
        """Outside events, written at once. Inside one, kept until its end (``_write_meta``):
        an event sets up to three keys (``last_seen_ms``, ``stats_rev``, the fleet fingerprint),
        and nothing reads ``meta`` but ``_meta``, which answers from memory in an event."""
        if self._in_event:
            rows = self._meta_rows
            if rows is None:
                self._meta(key)  # loads them
                rows = self._meta_rows
                assert rows is not None
            rows[key] = value
            self._meta_unwritten[key] = value
            return
        self._q(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
        )
        if self._meta_rows is not None:
            self._meta_rows[key] = value

    def _write_meta(self) -> None:
        """Inside the event's transaction, before it commits: the keys it set, in one statement
        per ``META_PER_STATEMENT`` (a Durable Object binds at most 100 values per statement)."""
        items = list(self._meta_unwritten.items())
        for start in range(0, len(items), META_PER_STATEMENT):
            chunk = items[start : start + META_PER_STATEMENT]
            self._q(
                f"INSERT INTO meta (key, value) VALUES {', '.join(['(?, ?)'] * len(chunk))} "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                *(v for item in chunk for v in item),
            )
        self._meta_unwritten.clear()


__all__ = ["MAX_REMEMBERED_PROMPTS", "META_PER_STATEMENT", "ActorMemory"]
