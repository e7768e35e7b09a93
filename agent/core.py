"""The agent's protocol logic, sans I/O (DESIGN §5, §6, §7).

``AgentCore`` is driven by its host with plain inputs — a frame's text, the current time,
what the presenter saw — and answers each call with ``Effects``: frames to send, display
commands (``Show`` / ``Withdraw``) and, rarely, a reason to drop the connection. It never
sleeps, never opens a socket and draws randomness only from the ``rng`` it is given, so a
deterministic simulation can run many agents on one seed. ``next_deadline_ms()`` says when
the host must call ``tick`` next (the websockets pattern: feed → drain → flush → arm).

Theory of operation:

- **Persist before send.** A delivered prompt is committed (with its receipt in the outbox)
  before the receipt leaves and before anything is shown. A decision is committed with
  ``synchronous=FULL`` before it is reported.
- **Once only (I5).** A deliver is a duplicate when we already hold its ``prompt_id`` — which
  covers a replay with the same frame id too. A duplicate gets a fresh receipt (or its
  rejection again) and never a second ``Show``. Cancels are deduplicated by frame id.
- **Our outbox.** Receipts and updates wait in the store until the bridge acks their id; they
  are flushed after every ``state.report`` and resent with full-jitter backoff while
  connected, byte for byte (same id). Nothing is sent before ``hello.ok``.
- **Bridge time.** ``expires_at_ms`` and ``decided_at_ms`` are bridge time; local time plus the
  offset measured from ``hello.ok`` and heartbeat acks (``caisey.clock``), persisted so a
  restart without network still expires prompts on time.
- **One dialog at a time**, oldest first. A prompt the presenter returned without an answer is
  parked for this session; a ``wait`` no-user policy parks it for ``no_user_retry_ms``. After a
  restart every live, undismissed prompt is shown again.

Local status per prompt: ``received`` → ``acknowledged`` → ``decided`` | ``closed`` |
``rejected``. A cancel closes an open prompt without an update (its ack is the answer); a user
answer that races the cancel is still recorded and reported — the bridge keeps it as a
``late_decision`` (DESIGN §4 R3).
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from agent.store import OutboxRow, PromptRow, Store
from agent.windows import AgentWindows, WindowGone, WindowShown
from caisey import __version__
from caisey.backoff import Backoff
from caisey.clock import MAX_OFFSET_MS, OffsetEstimator, OffsetSample, bounded_offset, offset_sample
from caisey.digest import held_digest
from caisey.errors import ProtocolError, UsageError
from caisey.ids import IdSource
from caisey.localtime import zone_problem
from caisey.signing import answer_message, b64encode
from caisey.wire import (
    MAX_OPEN_PROMPTS,
    MAX_TEXT_CHARS,
    PING_FRAME,
    PONG_FRAME,
    Ack,
    DisplayEvidence,
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
    WindowNotice,
    check_locale,
    decode,
    encode,
    peek_id,
)

log = logging.getLogger("caisey.agent")

AGENT_VERSION = f"caisey-agent/{__version__}"
Answer = Literal["approve", "deny", "dismiss"]
ANSWERS: tuple[str, ...] = ("approve", "deny", "dismiss")

# Heartbeat acks we still wait for; older ones are useless as offset samples (NTP window).
MAX_PENDING_HEARTBEATS = 8
# Error frames from the bridge kept for ``status`` and tests; a hostile bridge cannot grow it.
MAX_ERRORS_KEPT = 32
# Prompts the store holds at most, whatever their status (issue 11 item 10: a flooding bridge
# made it store 3,000 prompts, 14 MB). Five times the open limit leaves room for the open
# prompts and the recent final ones a bridge may ask back after a storage loss; when full, the
# oldest final-and-acked prompts go first, and a deliver that still finds no room is answered
# ``rejected`` without being stored.
MAX_STORED_PROMPTS = 5 * MAX_OPEN_PROMPTS
# Frame ids remembered (deduplication) and prompts remembered as cancelled before they arrived:
# a bridge sending cancels for ever new ids would otherwise grow both tables without end. The
# oldest go first; forgetting one costs at most a harmless second processing.
MAX_SEEN_EVENTS = 20 * MAX_STORED_PROMPTS
MAX_TOMBSTONES = 2 * MAX_STORED_PROMPTS
# Own frames sent in one step (the flush after hello.ok, or one tick's resends); the rest stay
# due and go on the next tick. Well under the host's send queue (``agent.connection``), so our
# own backlog can never overflow it and cost the connection.
MAX_FRAMES_PER_STEP = 256
# The longest a prompt stays open here, counted on the local clock from its receipt: a create
# asks at most 7 days (``BridgeConfig.max_expires_in_ms``). Together with the bound on the
# clock offset (``caisey.clock.MAX_OFFSET_MS``) a bridge cannot keep a prompt open for ever
# by claiming another time or ``expires_at`` 9999-12-31.
MAX_PROMPT_LIFETIME_MS = 7 * 24 * 3600 * 1000


# What the endpoint's own policy lets an unattended prompt do (``run --unattended``, DESIGN
# §10): ``deny`` (default) answers a requested unattended approve with deny; ``approve`` lets
# the prompt's on_no_user stand; ``wait`` never answers an unattended approve (it waits).
UNATTENDED_CAPS = ("deny", "approve", "wait")


def capped_no_user(requested: str, cap: str) -> tuple[str, str]:
    """``(outcome, how)`` of a prompt's on_no_user under the endpoint's cap. ``how`` names the
    endpoint policy when it changed the outcome, so the console can say who decided."""
    if requested == "approve" and cap != "approve":
        return cap, "endpoint_policy"
    return requested, "no_user_policy"


class Signer(Protocol):
    """The endpoint key (``agent.identity.EndpointKey``): signs answers, never leaves the host."""

    key_id: str

    def sign(self, message: bytes) -> bytes: ...


class Rng(Protocol):
    """The randomness the core needs: ``random.Random`` or ``random.SystemRandom``."""

    def getrandbits(self, k: int, /) -> int: ...

    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Timings of the agent; defaults follow DESIGN §5–§6."""

    # Until hello.ok tells us the bridge's interval.
    heartbeat_ms: int = 15_000
    # A bridge that has not answered hello in this long is not there.
    hello_timeout_ms: int = 30_000
    # No frame at all for this many heartbeat intervals: the socket is dead (sleep, NAT drop).
    dead_after_heartbeats: int = 3
    # Resend of unacked receipts/updates while connected.
    resend: Backoff = field(default_factory=lambda: Backoff(base_ms=2_000, factor=2.0, cap_ms=60_000, floor_ms=500))
    # ``wait`` no-user policy: ask the presenter again after this long.
    no_user_retry_ms: int = 60_000
    # A locked screen under the ``wait`` rule (DESIGN §13): look again after this long.
    locked_retry_ms: int = 5_000
    # Final-and-acked prompts and processed frame ids are forgotten after this long. The
    # bridge's idempotency horizon is a prompt's lifetime + 24 h; a week is well past it.
    retention_ms: int = 7 * 24 * 3600 * 1000
    housekeeping_every_ms: int = 3600 * 1000
    # ``last_seen`` is written at most this often (each write is an fsync).
    last_seen_write_ms: int = 5_000
    max_open_prompts: int = MAX_OPEN_PROMPTS
    max_stored_prompts: int = MAX_STORED_PROMPTS
    # The endpoint's cap on unattended answers (``UNATTENDED_CAPS``).
    unattended: str = "deny"


@dataclass(frozen=True, slots=True)
class Show:
    """Display this prompt now. ``expires_at_local_ms`` is its expiry on the local clock."""

    prompt: PromptCopy
    expires_at_local_ms: int


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Take the dialog for this prompt down: ``reason`` is cancelled|superseded|expired."""

    prompt_id: str
    reason: str


DisplayCommand = Show | Withdraw | WindowShown | WindowGone


@dataclass(slots=True)
class Effects:
    """What the host must do after a core call, in order: send, display, close."""

    send: list[str] = field(default_factory=list)
    display: list[DisplayCommand] = field(default_factory=list)
    close: str | None = None  # drop the connection (reason for the log)

    def __bool__(self) -> bool:
        return bool(self.send or self.display or self.close)


def _without_shown_text(line: HeldPrompt) -> HeldPrompt:
    """A report line with its evidence's shown text left out (its signed hash kept)."""
    if line.display is None or line.display.shown_text is None:
        return line
    return replace(line, display=replace(line.display, shown_text=None))


class AgentCore(AgentWindows):
    """One endpoint's runtime protocol state over a ``Store``.

    Call ``start`` once, then ``on_connected`` / ``on_frame`` / ``on_disconnected`` as the
    socket comes and goes, the ``on_*`` presenter callbacks as the user acts, and ``tick``
    at ``next_deadline_ms()``. Every call returns the ``Effects`` to perform.
    """

    def __init__(
        self,
        store: Store,
        endpoint_id: str,
        *,
        rng: Rng | None = None,
        config: AgentConfig | None = None,
        agent_version: str = AGENT_VERSION,
        signer: Signer | None = None,
        time_zone: Callable[[], str | None] | None = None,
        locale: Callable[[], str | None] | None = None,
    ) -> None:
        self.store = store
        # The user's locale (``agent.display``), reported in each hello (issue 16).
        self._locale = locale or (lambda: None)
        # The endpoint's IANA zone name (``agent.localzone``), asked at each hello and full
        # heartbeat (issue 14): a heartbeat carries it only when it changed since the hello.
        self._time_zone = time_zone or (lambda: None)
        self._hello_zone: str | None = None
        self.endpoint_id = endpoint_id
        self.config = config or AgentConfig()
        if self.config.unattended not in UNATTENDED_CAPS:
            raise UsageError(f"unattended must be one of {UNATTENDED_CAPS}, got {self.config.unattended!r}")
        # None: enrolled before signing existed; answers go unsigned (the bridge says so).
        self.signer = signer
        self.agent_version = agent_version
        self._rng: Rng = rng if rng is not None else random.SystemRandom()
        self._ids = IdSource(self._rng.getrandbits)
        self._uniform: Callable[[], float] = self._rng.random
        self._estimator = OffsetEstimator(bounded_offset(store.meta_int("offset_ms") or 0))
        self._out = Effects()
        self._started = False
        # connection (memory only: a new connection starts from hello)
        self._connected = False
        self._ready = False
        self._hello_id: str | None = None
        self._hello_sent_ms = 0
        self._connected_at_ms = 0
        self._last_inbound_ms = 0
        self._heartbeat_ms = self.config.heartbeat_ms
        self._next_heartbeat_ms: int | None = None
        # Set by a hello.ok with ``digest_ms`` (issue 12): between full heartbeats, every
        # ``_heartbeat_ms`` is a constant ping the bridge's runtime answers without waking it.
        self._digest_ms: int | None = None
        self._next_digest_ms: int | None = None
        self._pending_heartbeats: OrderedDict[str, int] = OrderedDict()
        self._last_report_id: str | None = None
        self._last_seen_written_ms = 0
        # display (memory only: after a restart every live prompt is shown again)
        self._showing: str | None = None
        self._parked: dict[str, int | None] = {}  # prompt_id → retry at (None: not this session)
        self._next_housekeeping_ms = 0
        self.errors_received: deque[Error] = deque(maxlen=MAX_ERRORS_KEPT)
        self._refused = 0  # delivers refused unstored (store full), for the log
        self._grants: dict[str, int] = {}  # within one approval: the window minutes chosen (agent.windows)

    # --- read-only views ---------------------------------------------------------------------

    @property
    def offset_ms(self) -> int:
        """Bridge clock minus local clock, best estimate."""
        return self._estimator.offset_ms

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def ready(self) -> bool:
        """Connected and the bridge answered our hello."""
        return self._ready

    @property
    def showing(self) -> str | None:
        """The prompt whose dialog is up, if any."""
        return self._showing

    def bridge_time(self, now_ms: int) -> int:
        return now_ms + self.offset_ms

    def local_expiry_ms(self, prompt: PromptCopy, received_at_ms: int | None = None) -> int:
        """When ``prompt`` expires on the local clock: at ``expires_at`` (bridge time through the
        offset), and never later than its lifetime counted from the local receipt, whatever a
        bridge claims about its clock or the expiry (capped at ``MAX_PROMPT_LIFETIME_MS``)."""
        by_offset = prompt.expires_at_ms - self.offset_ms
        if received_at_ms is None:
            return by_offset
        lifetime = min(max(0, prompt.expires_at_ms - prompt.created_at_ms), MAX_PROMPT_LIFETIME_MS)
        return min(by_offset, received_at_ms + lifetime)

    def _expires_by(self, row: PromptRow) -> int:
        return self.local_expiry_ms(row.prompt, row.received_at_ms)

    def digest(self) -> str:
        """``caisey.digest.held_digest`` of the prompts held open and undecided."""
        return held_digest((row.prompt_id, row.status) for row in self.store.open_prompts())

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, now_ms: int) -> Effects:
        """After (re)start: close what expired while we were down, show what is live."""
        if self._started:
            raise UsageError("AgentCore.start called twice")
        self._started = True
        self._housekeeping(now_ms)
        self._expire_due(now_ms)
        self._pump(now_ms)
        self._show_windows(now_ms)  # the indicators of windows still active (agent.windows)
        return self._drain()

    def on_connected(self, now_ms: int) -> Effects:
        """The socket is open: say hello (t0 of the offset exchange)."""
        self._require_started()
        self._connected, self._ready = True, False
        self._connected_at_ms = self._last_inbound_ms = now_ms
        self._pending_heartbeats.clear()
        # A new connection often follows a sleep, when the local clock may have stepped: the
        # old samples' small round trips would outvote the truth, so this connection's
        # samples start a fresh window (the last estimate stands until hello.ok).
        self._estimator = OffsetEstimator(self.offset_ms)
        self._hello_id = self._new_id(now_ms)
        self._hello_sent_ms = now_ms
        self._hello_zone = self._zone_now()
        self._emit(
            Hello(
                self._hello_id,
                self.endpoint_id,
                self.agent_version,
                now_ms,
                self.store.meta_get("last_acked_id"),
                pings=True,
                time_zone=self._hello_zone,
                locale=self._locale_now(),
            )
        )
        return self._drain()

    def on_disconnected(self, now_ms: int) -> Effects:
        """The socket is gone. Nothing owed is lost: the outbox waits for the next hello."""
        if self._connected:
            self.store.meta_set("disconnected_at_ms", now_ms)
        self._connected = self._ready = False
        self._hello_id = None
        self._next_heartbeat_ms = None
        self._digest_ms = self._next_digest_ms = None
        self._pending_heartbeats.clear()
        return self._drain()

    # --- frames from the bridge --------------------------------------------------------------

    def on_frame(self, raw: str | bytes, now_ms: int) -> Effects:
        """One frame from the bridge. A bad one gets an ``error`` back; nothing escapes."""
        self._require_started()
        self._last_inbound_ms = now_ms
        if now_ms - self._last_seen_written_ms >= self.config.last_seen_write_ms:
            self._last_seen_written_ms = now_ms
            self.store.meta_set("last_seen_ms", now_ms)
        if raw == PONG_FRAME:
            return self._drain()  # proof of life (``_last_inbound_ms`` above), nothing else
        try:
            message = decode(raw)
        except ProtocolError as exc:
            log.warning("bad frame from the bridge: %s", exc)
            self._send_error(exc.code, exc.message, peek_id(raw), now_ms)
            return self._drain()
        self._dispatch(message, now_ms)
        return self._drain()

    def _dispatch(self, message: Message, now_ms: int) -> None:
        if isinstance(message, PromptDeliver):
            self._on_deliver(message, now_ms)
        elif isinstance(message, PromptCancel):
            self._on_cancel(message, now_ms)
        elif isinstance(message, Ack):
            self._on_ack(message, now_ms)
        elif isinstance(message, HelloOk):
            self._on_hello_ok(message, now_ms)
        elif isinstance(message, StateRequest):
            if self._ready:
                self._report(now_ms)
                if message.include_final_since_ms is not None:
                    self._report_history(message, now_ms)
                    self._resend_windows(message.include_final_since_ms, now_ms)  # agent.windows
        elif isinstance(message, WindowNotice):
            self._on_window_notice(message, now_ms)
        elif isinstance(message, Error):
            log.warning("bridge error %s (of %s): %s", message.code, message.of, message.message)
            self._on_window_refused(message)  # agent.windows
            self.errors_received.append(message)
        else:
            # hello, receipt, update, report, heartbeat: frames a runtime sends, not receives.
            self._send_error("unexpected_type", f"a runtime does not accept {message.TYPE} frames", message.id, now_ms)

    def _on_hello_ok(self, message: HelloOk, now_ms: int) -> None:
        if not self._connected or message.in_reply_to != self._hello_id or self._ready:
            log.info("ignoring hello.ok for %s (ours: %s)", message.in_reply_to, self._hello_id)
            return
        self._add_sample(offset_sample(self._hello_sent_ms, message.received_at_ms, message.sent_at_ms, now_ms))
        with self.store.transaction():
            self.store.meta_set("offset_ms", self.offset_ms)
            self.store.meta_set("connected_at_ms", now_ms)
        self._heartbeat_ms = message.heartbeat_ms
        self._next_heartbeat_ms = now_ms + self._heartbeat_ms
        self._digest_ms = message.digest_ms
        self._next_digest_ms = now_ms + message.digest_ms if message.digest_ms is not None else None
        # The offset may have moved a lot (a laptop that slept): expire by the new estimate
        # while not yet ready, so the closures leave with the flush, after the report.
        self._expire_due(now_ms)
        self._ready = True
        self._report(now_ms)
        self._flush_outbox(now_ms)
        self._pump(now_ms)

    def _add_sample(self, sample: OffsetSample) -> None:
        """One offset measurement, unless it is beyond ``MAX_OFFSET_MS`` (a bridge claiming
        1970 would otherwise make every prompt live for ever here): refused, loudly."""
        if abs(sample.offset_ms) > MAX_OFFSET_MS:
            log.error(
                "the bridge's clock is %.1f h away from ours (more than the %d h accepted): offset refused, "
                "keeping %d ms; fix this computer's clock or the bridge's",
                sample.offset_ms / 3_600_000,
                MAX_OFFSET_MS // 3_600_000,
                self.offset_ms,
            )
            return
        self._estimator.add(sample)

    def _on_deliver(self, message: PromptDeliver, now_ms: int) -> None:
        prompt = message.prompt
        held = self.store.get_prompt(prompt.prompt_id)
        if held is not None:
            self._on_duplicate_deliver(message, held, now_ms)
            return
        if not self._room_for_a_prompt(now_ms):
            self._refuse_unstored(message, now_ms)
            return
        expired = self.local_expiry_ms(prompt, now_ms) <= now_ms
        tombstone = self.store.tombstone(prompt.prompt_id)
        full = self.store.count_open() >= self.config.max_open_prompts
        with self.store.transaction():
            self.store.mark_seen(message.id, PromptDeliver.TYPE, prompt.prompt_id, now_ms)
            self.store.trim_seen(MAX_SEEN_EVENTS)
            if full and not expired and tombstone is None:
                detail = f"the endpoint already holds {self.config.max_open_prompts} open prompts"
                self.store.insert_prompt(prompt, message.id, now_ms, "rejected")
                self.store.update_prompt(prompt.prompt_id, now_ms, detail=detail)
                self._queue(PromptUpdate(self._new_id(now_ms), prompt.prompt_id, "rejected", detail=detail), now_ms)
            else:
                self.store.insert_prompt(prompt, message.id, now_ms, "received")
                self._queue(PromptReceipt(self._new_id(now_ms), prompt.prompt_id, message.id, now_ms), now_ms)
                if tombstone is not None:
                    # Cancelled before it reached us (frames reordered): hold it, never show it.
                    self.store.update_prompt(
                        prompt.prompt_id, now_ms, status="closed", detail=tombstone, final_acked=True
                    )
                elif expired:
                    self._close_expired(prompt.prompt_id, now_ms)
        self._send_new(prompt.prompt_id, now_ms)
        self._pump(now_ms)

    def _room_for_a_prompt(self, now_ms: int) -> bool:
        """Whether the store may take one more prompt (``MAX_STORED_PROMPTS``), making room by
        forgetting final-and-acked ones (expired first, then the oldest)."""
        cap = self.config.max_stored_prompts
        held = self.store.count_prompts()
        if held < cap:
            return True
        forgotten = self.store.forget_oldest_final_acked(held - cap + 1, self.bridge_time(now_ms))
        if forgotten:
            log.info("store full (%d prompts): forgot the %d oldest final and acked", held, forgotten)
        return held - forgotten < cap

    def _refuse_unstored(self, message: PromptDeliver, now_ms: int) -> None:
        """No room even after forgetting: answer ``rejected`` without storing anything. A
        redelivery finds the same answer; an honest bridge never gets here (it holds at most
        ``MAX_OPEN_PROMPTS`` open and acks what we report)."""
        self._refused += 1
        if self._refused == 1 or self._refused % 100 == 0:
            log.warning(
                "refused %d prompt(s) without storing them: %d prompts held and none may be forgotten "
                "(the bridge does not acknowledge our updates, or floods us)",
                self._refused,
                self.config.max_stored_prompts,
            )
        detail = f"the endpoint already holds {self.config.max_stored_prompts} prompts"
        self._emit(PromptUpdate(self._new_id(now_ms), message.prompt.prompt_id, "rejected", detail=detail))

    def _on_duplicate_deliver(self, message: PromptDeliver, held: PromptRow, now_ms: int) -> None:
        """Same prompt again (a replay or a re-queue, R5): answer it, never show it twice."""
        pid = held.prompt_id
        with self.store.transaction():
            self.store.mark_seen(message.id, PromptDeliver.TYPE, pid, now_ms)
            if held.status == "rejected":
                self.store.outbox_remove_kind(pid, PromptUpdate.TYPE)
                self._queue(PromptUpdate(self._new_id(now_ms), pid, "rejected", detail=held.detail or ""), now_ms)
            else:
                self.store.outbox_remove_kind(pid, PromptReceipt.TYPE)
                self._queue(PromptReceipt(self._new_id(now_ms), pid, message.id, held.received_at_ms), now_ms)
            owes_update = any(r.kind == PromptUpdate.TYPE for r in self.store.outbox_for(pid))
            if held.status == "decided" and held.final_acked and not owes_update:
                # The bridge acked our answer once, yet delivers the prompt again: it has lost the
                # answer (storage restored from a backup, and the history report that would have
                # carried it lost too). A receipt alone would leave it waiting for an answer that
                # never comes (the simulation found this); answer again. Its dedup of facts that add
                # nothing makes this harmless when the bridge did know.
                assert held.decision is not None and held.decided_at_ms is not None
                update = PromptUpdate(
                    self._new_id(now_ms),
                    pid,
                    "decided",
                    how=held.how,
                    decision=held.decision,
                    decided_at_ms=held.decided_at_ms,
                    key_id=held.key_id,
                    sig=held.sig,
                    display=held.display,
                )
                self._queue(update, now_ms)
                self.store.update_prompt(pid, now_ms, final_acked=False)  # in reports until acked again
        # Everything we owe for this prompt goes now, the fresh receipt first.
        if self._ready:
            rows = sorted(self.store.outbox_for(pid), key=lambda r: (r.kind != PromptReceipt.TYPE, r.seq))
            self._transmit(rows, now_ms)

    def _on_cancel(self, message: PromptCancel, now_ms: int) -> None:
        pid = message.prompt_id
        if not self.store.seen(message.id):
            held = self.store.get_prompt(pid)
            with self.store.transaction():
                self.store.mark_seen(message.id, PromptCancel.TYPE, pid, now_ms)
                self.store.trim_seen(MAX_SEEN_EVENTS)
                if held is None:
                    self.store.add_tombstone(pid, message.reason, now_ms)
                    self.store.trim_tombstones(MAX_TOMBSTONES)
                elif held.is_open:
                    # The ack below is the answer; no update is owed (final and acked).
                    self.store.update_prompt(pid, now_ms, status="closed", detail=message.reason, final_acked=True)
                    self.store.outbox_drop_nonfinal(pid)
            if self._showing == pid:
                self._withdraw(pid, message.reason)
            self._parked.pop(pid, None)
        self._emit(Ack(self._new_id(now_ms), message.id))
        self._pump(now_ms)

    def _note_acked(self, frame_id: str) -> None:
        """Remember the last frame the bridge acked (echoed in ``hello``: proof it kept it)."""
        self.store.meta_set("last_acked_id", frame_id)

    def _report_history(self, request: StateRequest, now_ms: int) -> None:
        """The bridge lost storage: resend final-and-acked prompts as ``history`` reports (R6)."""
        since_local_ms = (request.include_final_since_ms or 0) - self.offset_ms
        digest, offset = self.digest(), 0
        while True:
            # Pages of MAX_OPEN_PROMPTS; a shorter page (possibly empty) tells the bridge it was the last.
            rows = self.store.final_acked_since(since_local_ms, MAX_OPEN_PROMPTS, offset)
            lines = tuple(self._held_line(row) for row in rows)
            report = StateReport(self._new_id(now_ms), lines, digest, scope="history")
            try:
                self._out.send.append(encode(report))
            except ProtocolError:  # a short page would say "the last": keep 100, drop the texts
                report = StateReport(report.id, tuple(_without_shown_text(line) for line in lines), digest, "history")
                self._out.send.append(encode(report))
            if len(rows) < MAX_OPEN_PROMPTS:
                return
            offset += len(rows)

    def _on_ack(self, message: Ack, now_ms: int) -> None:
        t0 = self._pending_heartbeats.pop(message.of, None)
        if t0 is not None:
            if message.received_at_ms is not None and message.sent_at_ms is not None:
                self._add_sample(offset_sample(t0, message.received_at_ms, message.sent_at_ms, now_ms))
                if self.store.meta_int("offset_ms") != self.offset_ms:
                    self.store.meta_set("offset_ms", self.offset_ms)
            return
        row = self.store.outbox_get(message.of)
        if row is None:
            if message.of == self._last_report_id:
                self._note_acked(message.of)
            return  # the report's ack, a duplicate ack, or an id we already forgot
        with self.store.transaction():
            self._note_acked(row.id)
            self.store.outbox_delete(row.id)
            if row.final:
                self.store.update_prompt(row.prompt_id, now_ms, final_acked=True)
                self.store.outbox_drop_nonfinal(row.prompt_id)

    # --- what the presenter saw --------------------------------------------------------------

    def on_shown(self, prompt_id: str, now_ms: int) -> Effects:
        """The dialog is in front of the user: ``acknowledged`` (how: shown), once."""
        held = self.store.get_prompt(prompt_id)
        if held is None or not held.is_open:
            return self._drain()
        with self.store.transaction():
            first = held.first_shown_at_ms if held.first_shown_at_ms is not None else now_ms
            self.store.update_prompt(prompt_id, now_ms, shown_count=held.shown_count + 1, first_shown_at_ms=first)
            if held.status == "received":
                self.store.update_prompt(prompt_id, now_ms, status="acknowledged", how="shown")
                self._queue(PromptUpdate(self._new_id(now_ms), prompt_id, "acknowledged", how="shown"), now_ms)
        self._send_new(prompt_id, now_ms)
        return self._drain()

    def on_user_answer(
        self, prompt_id: str, answer: str, now_ms: int, display: DisplayEvidence | None = None
    ) -> Effects:
        """The user chose approve, deny or dismiss (dismiss: seen, no choice; not shown again).
        ``display``: how it was shown (``shown_at_ms`` on the local clock), signed with a
        decision (``caisey/decision/v2``)."""
        if answer not in ANSWERS:
            raise UsageError(f"answer must be one of {ANSWERS}, got {answer!r}")
        if self._showing == prompt_id:
            self._showing = None
        held = self.store.get_prompt(prompt_id)
        if held is None:
            log.warning("answer %s for unknown prompt %s ignored", answer, prompt_id)
        elif answer == "dismiss":
            if held.is_open:
                key_id, sig = self._sign(held.prompt, "dismiss", "dismissed", 0)
                with self.store.transaction():
                    self.store.update_prompt(
                        prompt_id,
                        now_ms,
                        status="acknowledged",
                        how="dismissed",
                        dismissed=True,
                        key_id=key_id,
                        sig=sig,
                    )
                    update = PromptUpdate(
                        self._new_id(now_ms), prompt_id, "acknowledged", how="dismissed", key_id=key_id, sig=sig
                    )
                    self._queue(update, now_ms)
                self._send_new(prompt_id, now_ms)
        else:
            self._decide(held, answer, "user", now_ms, display)
        self._pump(now_ms)
        return self._drain()

    def on_no_answer(self, prompt_id: str, now_ms: int) -> Effects:
        """The presenter finished without an answer: the prompt waits (not shown again this run)."""
        if self._showing == prompt_id:
            self._showing = None
        self._parked[prompt_id] = None
        self._pump(now_ms)
        return self._drain()

    def on_locked(self, prompt_id: str, now_ms: int) -> Effects:
        """The screen is locked and the prompt's rule is ``wait``: it is not shown now; the
        presenter is asked again after ``locked_retry_ms`` (the answer clock has not started)."""
        if self._showing == prompt_id:
            self._showing = None
        self._parked[prompt_id] = now_ms + self.config.locked_retry_ms
        self._pump(now_ms)
        return self._drain()

    def on_no_user(self, prompt_id: str, now_ms: int, display: DisplayEvidence | None = None) -> Effects:
        """No interactive user can be asked: apply the prompt's ``on_no_user`` policy.
        ``display`` says why (``no_user``: nobody logged in; ``locked``: a locked screen the
        prompt's ``on_locked`` rule treats as no user), recorded with the decision."""
        if self._showing == prompt_id:
            self._showing = None
        held = self.store.get_prompt(prompt_id)
        if held is not None and held.is_open:
            outcome, how = capped_no_user(held.prompt.on_no_user, self.config.unattended)
            if how == "endpoint_policy":
                log.info(
                    "prompt %s asks to %s when nobody is present; this endpoint's policy (--unattended %s) answers %s",
                    prompt_id,
                    held.prompt.on_no_user,
                    self.config.unattended,
                    outcome,
                )
            if outcome in ("approve", "deny"):
                self._decide(held, outcome, how, now_ms, display)
            else:
                self._parked[prompt_id] = now_ms + self.config.no_user_retry_ms
        self._pump(now_ms)
        return self._drain()

    def _decide(
        self, held: PromptRow, decision: str, how: str, now_ms: int, display: DisplayEvidence | None = None
    ) -> None:
        pid = held.prompt_id
        bridge_now = self.bridge_time(now_ms)
        if display is not None and display.shown_at_ms is not None:
            display = replace(display, shown_at_ms=max(0, self.bridge_time(display.shown_at_ms)))
        withdrawn = held.status == "closed" and held.detail in ("cancelled", "superseded")
        if not (held.is_open or withdrawn):
            log.info("decision %s for %s ignored: it is already %s", decision, pid, held.status)
            return
        if bridge_now >= held.prompt.expires_at_ms:
            log.info("decision %s for %s came after expires_at; closing it as expired", decision, pid)
            if held.is_open:
                with self.store.transaction():
                    self._close_expired(pid, now_ms)
                self._send_new(pid, now_ms)
            return
        key_id, sig = self._sign(held.prompt, decision, how, bridge_now, display)
        with self.store.transaction():
            self.store.update_prompt(
                pid,
                now_ms,
                status="decided",
                decision=decision,
                how=how,
                decided_at_ms=bridge_now,
                decided_local_ms=now_ms,
                final_acked=False,
                key_id=key_id,
                sig=sig,
                display=display,
            )
            update = PromptUpdate(
                self._new_id(now_ms),
                pid,
                "decided",
                how=how,
                decision=decision,
                decided_at_ms=bridge_now,
                key_id=key_id,
                sig=sig,
                display=display,
            )
            self._queue(update, now_ms)
            if not withdrawn:  # an approval the bridge will judge late starts no window (DESIGN §13)
                self._window_after_decision(held.prompt, decision, bridge_now, now_ms)
        # Committed with synchronous=FULL above: only now may the decision leave.
        self._send_new(pid, now_ms)
        self._parked.pop(pid, None)
        if self._showing == pid:
            self._showing = None

    # --- time ------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> Effects:
        """Do whatever is due at ``now_ms``: expiry, resends, heartbeat, liveness, housekeeping."""
        self._require_started()
        self._expire_due(now_ms)
        self._windows_due(now_ms)
        if self._connected:
            silent_ms = now_ms - self._last_inbound_ms
            if not self._ready and now_ms - self._connected_at_ms >= self.config.hello_timeout_ms:
                self._out.close = f"no hello.ok within {self.config.hello_timeout_ms} ms"
            elif self._ready and silent_ms >= self._dead_after_ms():
                self._out.close = f"no frame from the bridge for {silent_ms} ms"
        if self._ready and not self._out.close:
            due = [
                r
                for r in self.store.outbox_all()
                if r.next_attempt_at_ms is not None and r.next_attempt_at_ms <= now_ms
            ]
            self._transmit(due[:MAX_FRAMES_PER_STEP], now_ms)  # the rest stay due: the next tick
            if self._next_heartbeat_ms is not None and now_ms >= self._next_heartbeat_ms:
                self._heartbeat(now_ms)
        if now_ms >= self._next_housekeeping_ms:
            self._housekeeping(now_ms)
        self._pump(now_ms)
        return self._drain()

    def next_deadline_ms(self) -> int | None:
        """When ``tick`` must run next (None: nothing is scheduled)."""
        candidates: list[int] = [self._next_housekeeping_ms]
        candidates.extend(self._expires_by(row) for row in self.store.open_prompts())
        candidates.extend(t for t in self._parked.values() if t is not None)
        window_end = self._windows_deadline()
        if window_end is not None:
            candidates.append(window_end)
        if self._connected:
            if self._ready:
                candidates.append(self._last_inbound_ms + self._dead_after_ms())
                if self._next_heartbeat_ms is not None:
                    candidates.append(self._next_heartbeat_ms)
                resend = self.store.outbox_next_attempt_ms()
                if resend is not None:
                    candidates.append(resend)
            else:
                candidates.append(self._connected_at_ms + self.config.hello_timeout_ms)
        return min(candidates) if candidates else None

    def _dead_after_ms(self) -> int:
        return self.config.dead_after_heartbeats * self._heartbeat_ms

    def _expire_due(self, now_ms: int) -> None:
        for row in self.store.open_prompts():
            if self._expires_by(row) <= now_ms:
                with self.store.transaction():
                    self._close_expired(row.prompt_id, now_ms)
                if self._showing == row.prompt_id:
                    self._withdraw(row.prompt_id, "expired")
                self._parked.pop(row.prompt_id, None)
                self._send_new(row.prompt_id, now_ms)

    def _close_expired(self, prompt_id: str, now_ms: int) -> None:
        """Inside a transaction: closed locally at expires_at without a decision."""
        self.store.update_prompt(prompt_id, now_ms, status="closed", detail="expired", final_acked=False)
        self._queue(PromptUpdate(self._new_id(now_ms), prompt_id, "closed", detail="expired"), now_ms)

    def _heartbeat(self, now_ms: int) -> None:
        self._next_heartbeat_ms = now_ms + self._heartbeat_ms
        if self._next_digest_ms is not None and self._digest_ms is not None:
            if now_ms < self._next_digest_ms:
                self._out.send.append(PING_FRAME)  # its pong keeps the connection alive here too
                return
            self._next_digest_ms = now_ms + self._digest_ms
        frame_id = self._new_id(now_ms)
        self._pending_heartbeats[frame_id] = now_ms
        while len(self._pending_heartbeats) > MAX_PENDING_HEARTBEATS:
            self._pending_heartbeats.popitem(last=False)
        zone = self._zone_now()
        self._emit(Heartbeat(frame_id, now_ms, self.digest(), zone if zone != self._hello_zone else None))
        self._next_heartbeat_ms = now_ms + self._heartbeat_ms

    def _locale_now(self) -> str | None:
        """The locale to report: a well-formed tag, else None."""
        locale = self._locale()
        try:
            check_locale(locale, "locale")
        except ProtocolError:
            return None
        return locale

    def _zone_now(self) -> str | None:
        """The zone to report: a well-formed name, else None (the bridge then reads UTC)."""
        zone = self._time_zone()
        return zone if zone is not None and zone_problem(zone) is None else None

    def _housekeeping(self, now_ms: int) -> None:
        pruned = self.store.prune(now_ms - self.config.retention_ms)
        if pruned:
            log.info("forgot %d prompts final and acked for over %d ms", pruned, self.config.retention_ms)
        self._next_housekeeping_ms = now_ms + self.config.housekeeping_every_ms

    # --- display ---------------------------------------------------------------------------

    def _pump(self, now_ms: int) -> None:
        """Put the oldest live prompt on screen when no dialog is up."""
        if self._showing is not None:
            return
        for row in self.store.open_prompts():
            if row.dismissed or self._expires_by(row) <= now_ms:
                continue
            if row.prompt_id in self._parked:
                retry_at = self._parked[row.prompt_id]
                if retry_at is None or retry_at > now_ms:
                    continue
                del self._parked[row.prompt_id]
            self._showing = row.prompt_id
            self._out.display.append(Show(row.prompt, self._expires_by(row)))
            return

    def _withdraw(self, prompt_id: str, reason: str) -> None:
        self._out.display.append(Withdraw(prompt_id, reason))
        if self._showing == prompt_id:
            self._showing = None

    # --- sending -----------------------------------------------------------------------------

    def _report(self, now_ms: int) -> None:
        """A full ``state.report``: every prompt held that is not final-and-acked."""
        rows = self.store.reportable_prompts(MAX_OPEN_PROMPTS)
        digest = self.digest()
        report_id = self._new_id(now_ms)
        lines = [self._held_line(row) for row in rows]
        while True:
            try:
                text = encode(StateReport(report_id, tuple(lines), digest))
                break
            except ProtocolError:
                if any(line.display is not None and line.display.shown_text is not None for line in lines):
                    # The texts shown go first: the signature covers their hash, which stays.
                    lines = [_without_shown_text(line) for line in lines]
                    continue
                # Very long multibyte texts can overflow the frame: the oldest closed lines go
                # first (the list is ordered open, decided, rest); the digest still covers all.
                log.warning("state.report too large with %d prompts; trimming", len(lines))
                lines = lines[: len(lines) // 2]
        self._last_report_id = report_id
        self._out.send.append(text)

    def _sign(
        self, prompt: PromptCopy, answer: str, how: str, decided_at_ms: int, display: DisplayEvidence | None = None
    ) -> tuple[str | None, str | None]:
        """``(key_id, sig)`` of an answer to ``prompt`` as it was delivered (DESIGN §10), and of
        how it was shown when ``display`` is given (v2, DESIGN §13)."""
        if self.signer is None:
            return None, None
        message = answer_message(self.endpoint_id, prompt, answer, how, decided_at_ms, display)
        return self.signer.key_id, b64encode(self.signer.sign(message))

    @staticmethod
    def _held_line(row: PromptRow) -> HeldPrompt:
        # For closed/rejected lines ``how`` carries the detail (expired, cancelled, why rejected).
        how = row.how if row.status in ("acknowledged", "decided") else row.detail
        if how is not None:
            how = how[:MAX_TEXT_CHARS]
        signed = row.status == "decided" or (row.status == "acknowledged" and row.how == "dismissed")
        key_id, sig = (row.key_id, row.sig) if signed else (None, None)
        display = row.display if row.status == "decided" else None
        # The logo's hash in place of its bytes: 100 lines with a 16 KiB logo each would not
        # fit a frame (the prompt's hash, which signatures cover, is the same either way).
        return HeldPrompt(
            row.prompt.without_logo(),
            row.status,
            row.decision,
            row.decided_at_ms,
            how,
            key_id=key_id,
            sig=sig,
            display=display,
        )

    def _queue(self, message: PromptReceipt | PromptUpdate, now_ms: int) -> None:
        """Inside a transaction: put our own frame in the outbox (sent after commit)."""
        final = isinstance(message, PromptUpdate) and message.status != "acknowledged"
        self.store.outbox_add(message.id, message.prompt_id, message.TYPE, final, encode(message), now_ms)

    def _send_new(self, prompt_id: str, now_ms: int) -> None:
        """After commit: send this prompt's outbox rows never sent yet (when ready)."""
        if self._ready:
            self._transmit([r for r in self.store.outbox_for(prompt_id) if r.attempts == 0], now_ms)

    def _flush_outbox(self, now_ms: int) -> None:
        """After the report on each connection: everything owed, attempts reset — at most
        ``MAX_FRAMES_PER_STEP`` now, the rest due at once and sent by the next ticks."""
        rows = self.store.outbox_all()
        self._transmit(rows[:MAX_FRAMES_PER_STEP], now_ms, reset=True)
        if len(rows) > MAX_FRAMES_PER_STEP:
            with self.store.transaction():
                for row in rows[MAX_FRAMES_PER_STEP:]:
                    self.store.outbox_mark_sent(row.id, 0, now_ms)

    def _transmit(self, rows: list[OutboxRow], now_ms: int, *, reset: bool = False) -> None:
        if not rows:
            return
        with self.store.transaction():
            for row in rows:
                attempt = 0 if reset else row.attempts
                delay_ms = self.config.resend.delay_ms(attempt, self._uniform)
                self.store.outbox_mark_sent(row.id, attempt + 1, now_ms + delay_ms)
        self._out.send.extend(row.frame for row in rows)

    def _send_error(self, code: str, message: str, of: str | None, now_ms: int) -> None:
        self._emit(Error(self._new_id(now_ms), code[:64], message[:MAX_TEXT_CHARS], of))

    def _emit(self, message: Message) -> None:
        self._out.send.append(encode(message))

    def _new_id(self, now_ms: int) -> str:
        return self._ids.new(now_ms)

    def _drain(self) -> Effects:
        out, self._out = self._out, Effects()
        return out

    def _require_started(self) -> None:
        if not self._started:
            raise UsageError("call AgentCore.start(now_ms) first")
