"""The agent's asyncio host: a WebSocket to the bridge around ``AgentCore`` (DESIGN §6).

Thin on purpose (STYLE: hosts are thin). Each callback — a frame arrived, a timer fired, a
presenter finished — is the same four steps: feed the core with the current time → take its
``Effects`` → queue the frames for the socket writer and start/cancel presenter tasks → wake
the timer, which sleeps until ``core.next_deadline_ms()``.

A dropped connection is normal life: we reconnect with full-jitter backoff
(``caisey.backoff``) forever, and the core's outbox makes sure nothing owed is lost. Local
expiry and the display keep running while disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp

from agent.core import AgentCore, Effects, Rng, Show, Withdraw
from agent.evidence import Before, DisplayContext, shown, unshown
from agent.indicator import Indicators
from agent.presenters import Presenter, Showing, kind_of, stop_finishing_programs
from agent.windows import Grant, WindowGone, WindowShown, pending_revoke_requests
from caisey.backoff import RECONNECT, Backoff, Reconnect
from caisey.wire import MAX_FRAME_BYTES

log = logging.getLogger("caisey.agent.connection")

# aiohttp drops a connection on a message above max_msg_size. Frames up to this size reach
# the core, which answers an oversized frame with an ``error`` and keeps the connection; a
# peer sending more than this is cut off instead of being buffered without bound.
MAX_WS_MESSAGE_BYTES = 8 * MAX_FRAME_BYTES
# The timer re-reads the wall clock at least this often, so a laptop waking from sleep (when
# the monotonic clock may have stood still) expires prompts and detects the dead socket soon.
MAX_TIMER_SLEEP_S = 5.0
# Frames queued for the socket writer; more means the socket is stuck or the bridge floods us
# with frames that each need an answer — drop the connection (our own backlog goes out in
# steps of ``agent.core.MAX_FRAMES_PER_STEP``, so it never fills this).
MAX_SEND_QUEUE = 1024
# The same queue bounded in characters: a bridge asking for a full report (up to
# ``MAX_FRAME_BYTES`` each) hundreds of times at once would otherwise queue hundreds of MB.
MAX_SEND_QUEUE_CHARS = 16 * MAX_FRAME_BYTES
# After an overflow the next attempt waits at least this long (and the session does not count
# as served): a flooding bridge used to get a silent reconnect loop, 37 sessions in 25 s.
OVERFLOW_BACKOFF_MIN_MS = 5_000
CONNECT_TIMEOUT_S = 20.0
# A peer the core declared dead will not answer our close frame; do not wait long for it.
CLOSE_TIMEOUT_S = 3.0
# How often the agent looks for ``caisey-agent revoke`` requests in its store (DESIGN §13).
REVOKE_POLL_S = 1.0


def wall_ms() -> int:
    return int(time.time() * 1000)


def plaintext_warning(bridge_url: str) -> str | None:
    """A loud warning when ``bridge_url`` sends the agent secret and the prompts unencrypted to
    another machine (``http://`` / ``ws://`` to a host that is not loopback), else None."""
    parts = urlsplit(bridge_url)
    if parts.scheme.lower() not in ("http", "ws"):
        return None
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"INSECURE: the bridge {bridge_url} is plain {parts.scheme}:// to a host that is not this machine; "
        "the agent secret, the prompts and the user's answers cross the network unencrypted and "
        "anyone on the path can read or change them. Use https://"
    )


def agent_url(bridge_url: str, endpoint_id: str) -> str:
    """``https://bridge/x`` → ``wss://bridge/x/api/endpoints/{endpoint_id}/agent``."""
    parts = urlsplit(bridge_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"bridge URL must be http(s):// or ws(s)://, got {bridge_url!r}")
    path = parts.path.rstrip("/") + f"/api/endpoints/{quote(endpoint_id, safe='')}/agent"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class AgentRunner:
    """Runs one ``AgentCore`` against the bridge until ``stop`` is set."""

    def __init__(
        self,
        core: AgentCore,
        *,
        url: str,
        secret: str,
        presenter: Presenter,
        rng: Rng | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], int] = wall_ms,
        display: DisplayContext | None = None,
    ) -> None:
        self.core = core
        # How prompts are shown and proven (DESIGN §13): session probe, locale, templates.
        self.display = display or DisplayContext()
        self.url = url
        self._secret = secret
        self.presenter = presenter
        self._rng: Rng = rng if rng is not None else random.SystemRandom()
        self.backoff = backoff or RECONNECT
        self._clock = clock
        self._wake = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_queue: asyncio.Queue[str] | None = None
        self._presenting: dict[str, asyncio.Task[None]] = {}
        self._session_ready = False
        self._overflowed = False  # this session's send queue overflowed
        self._queued_chars = 0  # characters in the send queue
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connections = 0  # sessions opened, for status and tests
        # Approval windows' indicators (``agent.indicator``): with the dialog presenters only.
        self.indicators = Indicators(
            lambda pid: self._call(self.core.on_user_revoke, pid), enabled=presenter.name in ("tk", "auto")
        )

    # --- the four steps ----------------------------------------------------------------------

    def _call(self, step: Callable[..., Effects], *args: object) -> None:
        """Feed the core (with the time), then perform its effects. The one boundary where
        an unexpected error is caught: logged with its traceback, the connection dropped so
        the bridge replays whatever we did not finish."""
        try:
            effects = step(*args, self._clock())
        except sqlite3.Error:
            log.exception("agent state could not be written; dropping the connection")
            self._close("local storage error")
            return
        except Exception:  # a bug in the core: never leave the timer or a presenter task dead
            log.exception("agent core failed in %s; dropping the connection", getattr(step, "__name__", step))
            self._close("internal error")
            return
        self._apply(effects)

    def _apply(self, effects: Effects) -> None:
        for text in effects.send:
            if self._send_queue is None:
                continue  # not connected: the outbox resends after the next hello
            if self._send_queue.full() or self._queued_chars + len(text) > MAX_SEND_QUEUE_CHARS:
                self._overflow()
                break
            self._send_queue.put_nowait(text)
            self._queued_chars += len(text)
        if self.core.ready:
            self._session_ready = True
        for command in effects.display:
            if isinstance(command, Show):
                self._start_presenting(command)
            elif isinstance(command, Withdraw):
                task = self._presenting.pop(command.prompt_id, None)
                if task is not None:
                    log.info("withdrawing prompt %s (%s)", command.prompt_id, command.reason)
                    task.cancel()
            elif isinstance(command, WindowShown | WindowGone):
                self.indicators.apply(command)
        if effects.close:
            log.warning("closing the connection: %s", effects.close)
            self._close(effects.close)
        self._wake.set()

    def _overflow(self) -> None:
        """The send queue is full: drop the connection, say so once, and back off (``run``)."""
        if not self._overflowed:
            self._overflowed = True
            log.warning(
                "send queue full (%d frames, %d characters waiting): the bridge floods us with frames to "
                "answer or the socket is stuck; dropping the connection and waiting at least %.0f s before the next",
                self._send_queue.qsize() if self._send_queue is not None else 0,
                self._queued_chars,
                OVERFLOW_BACKOFF_MIN_MS / 1000,
            )
        self._close("send queue full")

    def _close(self, reason: str) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            task = asyncio.get_running_loop().create_task(ws.close(message=reason.encode()[:120]))
            self._background(task)

    def _background(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- presenters ----------------------------------------------------------------------------

    def _start_presenting(self, show: Show) -> None:
        pid = show.prompt.prompt_id
        old = self._presenting.pop(pid, None)
        if old is not None:
            old.cancel()
        log.info("showing prompt %s: %s", pid, show.prompt.title)
        self._presenting[pid] = asyncio.get_running_loop().create_task(self._present(show), name=f"present-{pid}")

    async def _present(self, show: Show) -> None:
        pid = show.prompt.prompt_id
        shown_at: int | None = None

        def on_shown() -> None:
            nonlocal shown_at
            shown_at = self._clock()  # the answer clock starts here (DESIGN §13)
            self._call(self.core.on_shown, pid)

        try:
            before = await asyncio.to_thread(self.display.gate, show.prompt)
            if before.gate != "show":
                self._unshown(pid, before)
                return
            rendered = self.display.render(show.prompt)
            showing = Showing(show.prompt, show.expires_at_local_ms, rendered)
            outcome = await self.presenter.present(showing, on_shown)
        except asyncio.CancelledError:
            raise
        except Exception:  # a presenter bug must not take the agent down: the prompt waits
            log.exception("presenter %s failed on prompt %s", self.presenter.name, pid)
            outcome = "none"
        if self._presenting.get(pid) is asyncio.current_task():
            del self._presenting[pid]
        log.info("prompt %s: presenter answered %s", pid, outcome)
        if isinstance(outcome, Grant) or outcome in ("approve", "deny", "dismiss"):
            evidence = shown(before.state, kind_of(self.presenter), shown_at, rendered)
            if isinstance(outcome, Grant):  # approved, for fewer minutes than asked (DESIGN §13)
                self._call(partial(self.core.on_user_approve, display=evidence), pid, outcome.minutes)
            else:
                self._call(partial(self.core.on_user_answer, display=evidence), pid, outcome)
        elif outcome == "no_user":
            self._call(partial(self.core.on_no_user, display=unshown(before.state, "no_user")), pid)
        else:
            self._call(self.core.on_no_answer, pid)

    def _unshown(self, pid: str, before: Before) -> None:
        """Not shown: the screen is locked (wait, or the no-user rule), or nobody is there."""
        if self._presenting.get(pid) is asyncio.current_task():
            del self._presenting[pid]
        log.info("prompt %s not shown: %s (session %s)", pid, before.gate, before.state.session)
        if before.gate == "wait_unlock":
            self._call(self.core.on_locked, pid)
        else:
            outcome: Literal["locked", "no_user"] = "locked" if before.gate == "locked" else "no_user"
            self._call(partial(self.core.on_no_user, display=unshown(before.state, outcome)), pid)

    async def _stop_presenters(self) -> None:
        tasks = list(self._presenting.values())
        self._presenting.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- timer ---------------------------------------------------------------------------------

    async def _timer(self) -> None:
        while True:
            deadline = self.core.next_deadline_ms()
            delay_s = MAX_TIMER_SLEEP_S
            if deadline is not None:
                delay_s = min(delay_s, max(0.0, (deadline - self._clock()) / 1000))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay_s)
            deadline = self.core.next_deadline_ms()
            if deadline is not None and self._clock() >= deadline:
                self._call(self.core.tick)

    async def _watch_revocations(self) -> None:
        """``caisey-agent revoke`` leaves a row in our store; apply it within ``REVOKE_POLL_S``."""
        while True:
            await asyncio.sleep(REVOKE_POLL_S)
            try:
                pending = pending_revoke_requests(self.core.store.db)
            except sqlite3.Error as exc:
                log.warning("cannot read revoke requests: %s", exc)
                continue
            if pending:
                self._call(self.core.take_revoke_requests)

    # --- the socket ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve, reconnect with backoff — until ``stop`` is set."""
        self._call(self.core.start)
        timer = asyncio.get_running_loop().create_task(self._timer(), name="agent-timer")
        watch = asyncio.get_running_loop().create_task(self._watch_revocations(), name="agent-revocations")
        reconnect = Reconnect(self.backoff)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT_S)) as session:
                while not stop.is_set():
                    self._session_ready = self._overflowed = False
                    try:
                        await self._serve(session, stop)
                    except aiohttp.WSServerHandshakeError as exc:
                        if exc.status in (401, 403):
                            log.error("the bridge refused the agent secret (%s); re-enroll this endpoint", exc.status)
                        elif exc.status == 410:  # DELETE /api/endpoints/{eid}: for good
                            log.error(
                                "the bridge refused the agent (410): an admin removed this endpoint, and its secret "
                                "opens nothing now; stop and uninstall the agent, or enroll it as a new endpoint"
                            )
                        else:
                            log.warning("bridge refused the WebSocket: %s %s", exc.status, exc.message)
                    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                        log.warning("cannot reach the bridge at %s: %s", self.url, exc or type(exc).__name__)
                    if self._session_ready and not self._overflowed:
                        reconnect.served()
                    if stop.is_set():
                        break
                    delay_ms = reconnect.failed(self._rng.random)
                    if self._overflowed:
                        delay_ms = max(delay_ms, OVERFLOW_BACKOFF_MIN_MS)
                    log.info("reconnecting in %.1f s", delay_ms / 1000)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay_ms / 1000)
        finally:
            timer.cancel()
            watch.cancel()
            await self.indicators.close_all()
            await self._stop_presenters()
            await stop_finishing_programs()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def _serve(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        async with session.ws_connect(
            self.url,
            headers={"Authorization": f"Bearer {self._secret}"},
            max_msg_size=MAX_WS_MESSAGE_BYTES,
            heartbeat=None,  # the core's heartbeats and dead-peer check do this job
            autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
        ) as ws:
            self.connections += 1
            log.info("connected to %s", self.url)
            queue: asyncio.Queue[str] = asyncio.Queue(MAX_SEND_QUEUE)
            self._ws, self._send_queue, self._queued_chars = ws, queue, 0
            loop = asyncio.get_running_loop()
            writer = loop.create_task(self._writer(ws, queue), name="agent-writer")
            stopper = loop.create_task(self._close_on(stop, ws), name="agent-stopper")
            try:
                self._call(self.core.on_connected)
                while True:
                    message = await ws.receive()
                    if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        self._call(self.core.on_frame, message.data)
                    elif message.type == aiohttp.WSMsgType.ERROR:
                        log.warning("WebSocket error: %s", ws.exception())
                        break
                    elif message.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED,
                    ):
                        break
            finally:
                self._ws, self._send_queue = None, None
                self._call(self.core.on_disconnected)
                for task in (writer, stopper):
                    task.cancel()
                await asyncio.gather(writer, stopper, return_exceptions=True)
                log.info("disconnected from %s (code %s)", self.url, ws.close_code)

    async def _writer(self, ws: aiohttp.ClientWebSocketResponse, queue: asyncio.Queue[str]) -> None:
        while True:
            text = await queue.get()
            self._queued_chars -= len(text)
            try:
                await ws.send_str(text)
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                # The reader sees the close; the outbox resends after the next hello.
                log.info("send failed: %s", exc)
                await ws.close()
                return

    @staticmethod
    async def _close_on(stop: asyncio.Event, ws: aiohttp.ClientWebSocketResponse) -> None:
        await stop.wait()
        await ws.close()
