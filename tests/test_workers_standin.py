"""The Workers stand-in reproduces docs/WORKERS_RUNTIME.md, row by row.

If one of these fails, the stand-in no longer behaves like the runtime it stands in for,
and tests of worker/entry.py that pass on it prove less than they claim.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.workers_standin.harness import AgentClient, HandlerError, Harness, HttpResponse

# isort: split
# Importable once the harness has put the stand-in first on sys.path.
import _standin_runtime as rt
import js
import workers
from pyodide.ffi import JsException, JsProxy, jsnull, to_js

ROOT = Path(__file__).resolve().parent.parent


def sql() -> rt.SqlStorage:
    return rt.SqlStorage(rt.SqliteDatabase())


def typeof(storage: rt.SqlStorage, column: str = "v") -> str:
    return storage.exec(f"SELECT typeof({column}) AS t FROM t").one().t


# --- SQL storage ---------------------------------------------------------------------------------


def test_exec_is_synchronous_and_returns_a_jsproxy_cursor() -> None:
    cursor = sql().exec("SELECT 1 AS n")
    assert isinstance(cursor, JsProxy) and not hasattr(cursor, "__await__")


def test_rows_are_jsproxies_with_attribute_access_and_no_subscript() -> None:
    rows = sql().exec("SELECT 7 AS n").toArray()
    assert isinstance(rows, JsProxy) and len(rows) == 1
    row = rows[0]
    assert isinstance(row, JsProxy) and row.n == 7
    with pytest.raises(TypeError, match=r"^'pyodide\.ffi\.JsProxy' object is not subscriptable$"):
        row["n"]


def test_to_py_gives_dicts_with_jsnull_for_sql_null() -> None:
    rows = sql().exec("SELECT NULL AS a, 'x' AS b").toArray().to_py()
    assert rows == [{"a": jsnull, "b": "x"}]
    assert rows[0]["a"] is not None and not rows[0]["a"] and repr(rows[0]["a"]) == "jsnull"


def test_iterating_a_cursor_yields_jsproxy_rows() -> None:
    rows = list(sql().exec("SELECT 1 AS n UNION ALL SELECT 2"))
    assert all(isinstance(r, JsProxy) for r in rows)
    assert [r.to_py() for r in rows] == [{"n": 1}, {"n": 2}]


def test_one_raises_on_no_rows() -> None:
    storage = sql()
    assert storage.exec("SELECT 3 AS n").one().n == 3
    with pytest.raises(JsException) as info:
        storage.exec("SELECT 1 WHERE 0").one()
    assert str(info.value) == "Error: Expected exactly one result from SQL query, but got no results."


def test_column_names_rows_written_and_database_size() -> None:
    storage = sql()
    storage.exec("CREATE TABLE t (a, b)")
    written = storage.exec("INSERT INTO t VALUES (1, 2), (3, 4)")
    assert written.rowsWritten == 2
    assert list(storage.exec("SELECT a, b FROM t").columnNames) == ["a", "b"]
    assert isinstance(storage.databaseSize, int) and storage.databaseSize > 0


def test_an_object_has_storage_once_a_statement_wrote_not_when_it_only_read() -> None:
    db = rt.SqliteDatabase()
    storage = rt.SqlStorage(db)
    storage.exec("SELECT name FROM sqlite_master WHERE type = 'table'")
    storage.exec("SELECT 1 AS n")
    assert db.writes == 0  # reading an empty database creates no storage
    storage.exec("CREATE TABLE IF NOT EXISTS t (v)")  # a schema change writes
    assert db.writes == 1
    storage.exec("CREATE TABLE IF NOT EXISTS t (v)")  # already there: no write
    storage.exec("SELECT v FROM t")
    assert db.writes == 1
    storage.exec("INSERT INTO t VALUES (1)")
    assert db.writes == 2


async def test_the_harness_counts_objects_with_storage() -> None:
    h = Harness(secrets={"ADMIN_TOKEN_SHA256": "0" * 64})
    assert h.objects_with_storage() == []
    r = await h.fetch("GET", "/api/endpoints", headers={"authorization": "Bearer cst_not-the-admin"})
    assert r.status == 401
    assert h.objects_with_storage() == []  # constructed and read, never written


def test_bind_none_is_null() -> None:
    storage = sql()
    storage.exec("CREATE TABLE t (v)")
    storage.exec("INSERT INTO t VALUES (?)", None)
    assert typeof(storage) == "null"


def test_bind_true_is_stored_as_the_text_true() -> None:
    storage = sql()
    storage.exec("CREATE TABLE t (v)")
    storage.exec("INSERT INTO t VALUES (?)", True)
    assert typeof(storage) == "text" and storage.exec("SELECT v FROM t").one().v == "true"


def test_bind_int_is_a_real_that_reads_back_as_int() -> None:
    storage = sql()
    storage.exec("CREATE TABLE t (v)")
    storage.exec("INSERT INTO t VALUES (?)", 5)
    assert typeof(storage) == "real"
    value = storage.exec("SELECT v FROM t").one().v
    assert value == 5 and type(value) is int


def test_bind_int_beyond_2_53_raises_about_bigint() -> None:
    storage = sql()
    with pytest.raises(JsException, match="TypeError: Cannot convert a BigInt value to a number"):
        storage.exec("SELECT ?", 2**62)
    storage.exec("SELECT ?", 2**53 - 1)  # the largest safe integer is fine


def test_bind_dict_is_stored_as_its_python_text_and_a_js_object_as_object_object() -> None:
    storage = sql()
    storage.exec("CREATE TABLE t (v)")
    storage.exec("INSERT INTO t VALUES (?)", {"x": 1})
    storage.exec("INSERT INTO t VALUES (?)", to_js({"x": 1}, dict_converter=js.Object.fromEntries))
    assert [r.v for r in storage.exec("SELECT v FROM t")] == ["{'x': 1}", "[object Object]"]  # never JSON


def test_sql_errors_are_jsexceptions_ending_with_the_sqlite_code() -> None:
    storage = sql()
    storage.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    storage.exec("INSERT INTO t VALUES (1)")
    with pytest.raises(JsException) as info:
        storage.exec("INSERT INTO t VALUES (1)")
    assert str(info.value).endswith("SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_PRIMARYKEY)")
    with pytest.raises(JsException, match=r"SQLITE_ERROR$"):
        storage.exec("SELEC 1")


@pytest.mark.parametrize("statement", ["BEGIN", "begin transaction", "  COMMIT", "SAVEPOINT x", "ROLLBACK"])
def test_exec_refuses_transaction_statements(statement: str) -> None:
    with pytest.raises(JsException, match="transactionSync"):
        sql().exec(statement)


def test_several_statements_in_one_exec_are_executed() -> None:
    storage = sql()
    storage.exec("CREATE TABLE t (v); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);")
    assert storage.exec("SELECT COUNT(*) AS n FROM t").one().n == 2


def test_only_the_last_of_several_statements_may_have_parameters() -> None:
    storage = sql()
    storage.exec("CREATE TABLE t (v); INSERT INTO t VALUES (?)", 5)
    assert [r.v for r in storage.exec("SELECT v FROM t")] == [5]
    with pytest.raises(JsException, match="only the last statement can have parameters"):
        storage.exec("INSERT INTO t VALUES (?); INSERT INTO t VALUES (7)", 6)
    assert [r.v for r in storage.exec("SELECT v FROM t")] == [5]  # refused before anything ran


def test_transaction_sync_returns_the_value_and_rolls_back_on_exception() -> None:
    db = rt.SqliteDatabase()
    state = rt.DurableObjectStorage(type("Rec", (), {"db": db, "alarm_ms": None})())
    storage = state.sql
    storage.exec("CREATE TABLE t (v)")
    assert state.transactionSync(lambda: storage.exec("INSERT INTO t VALUES (1)").rowsWritten) == 1

    class Boom(Exception):
        pass

    boom = Boom("no")

    def failing() -> None:
        storage.exec("INSERT INTO t VALUES (2)")
        raise boom

    with pytest.raises(Boom) as info:
        state.transactionSync(failing)
    assert info.value is boom  # propagates unchanged
    assert [r.v for r in storage.exec("SELECT v FROM t")] == [1]


def test_transaction_sync_refuses_an_async_callback_that_workerd_would_run_outside_it() -> None:
    """workerd accepts it and runs the writes later, outside the transaction (WORKERS_RUNTIME.md
    "Observed later"); the stand-in refuses it, so a test catches the mistake."""
    db = rt.SqliteDatabase()
    state = rt.DurableObjectStorage(type("Rec", (), {"db": db, "alarm_ms": None})())
    storage = state.sql
    storage.exec("CREATE TABLE t (v)")

    async def writes() -> None:
        storage.exec("INSERT INTO t VALUES (1)")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine ... was never awaited" either
        with pytest.raises(JsException, match="outside the transaction"):
            state.transactionSync(writes)
        with pytest.raises(JsException, match="outside the transaction"):
            state.transactionSync(lambda: writes())  # a sync callable returning a coroutine
        gc.collect()
    assert storage.exec("SELECT COUNT(*) AS n FROM t").one().n == 0


# --- probe Worker: alarms, sockets, hibernation, requests -------------------------------------------

PROBE = """
import json
from urllib.parse import urlsplit

from js import Date, WebSocketPair
from pyodide.ffi import JsException, to_js
from workers import DurableObject, Response, WorkerEntrypoint

__all__ = ["Default", "Probe"]


class Probe(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS log (line TEXT)")
        ctx.storage.sql.exec("INSERT INTO log VALUES ('init')")
        self.memory = []

    def log(self, line):
        self.ctx.storage.sql.exec("INSERT INTO log VALUES (?)", line)

    async def fetch(self, request):
        path = urlsplit(request.url).path
        if request.headers.get("upgrade") == "websocket":
            client, server = WebSocketPair.new()
            try:
                self.ctx.acceptWebSocket(server, ["probe"])
            except JsException as exc:
                self.log("python list: " + str(exc))
            self.ctx.acceptWebSocket(server, to_js(["probe"]))
            server.serializeAttachment("attached")
            return Response(None, status=101, web_socket=client)
        if path == "/alarm":
            at = int(request.headers.get("x-at"))
            pending = self.ctx.storage.setAlarm(at)
            await pending
            return Response.json({"alarm": await self.ctx.storage.getAlarm()}, status=201, headers={"x-probe": "1"})
        if path == "/no-alarm":
            await self.ctx.storage.deleteAlarm()
            alarm = await self.ctx.storage.getAlarm()
            return Response.json({"is_jsnull": alarm is not None and not alarm})
        if path == "/echo":
            return Response.json({
                "method": str(request.method),
                "url": request.url,
                "missing": request.headers.get("x-missing"),
                "body": await request.text(),
            })
        return Response("not found", status=404)

    async def webSocketMessage(self, ws, message):
        self.memory.append(message)
        ws.send(json.dumps({
            "is_str": isinstance(message, str),
            "bytes": None if isinstance(message, str) else message.to_bytes().decode(),
            "attachment": ws.deserializeAttachment(),
            "memory": len(self.memory),
            "sockets": len(self.ctx.getWebSockets("probe")),
        }))

    async def webSocketClose(self, ws, code, reason, was_clean):
        self.log(f"close {code} {reason} {was_clean}")

    async def alarm(self, alarm_info=None):
        self.log(f"alarm at {Date.now()} retry {alarm_info.retryCount}")


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        stub = self.env.PROBE.get(self.env.PROBE.idFromName("one"))
        return await stub.fetch(request)
"""

PROBE_TOML = """
name = "probe"
main = "probe.py"
compatibility_date = "2026-04-20"
compatibility_flags = ["python_workers"]

[[durable_objects.bindings]]
name = "PROBE"
class_name = "Probe"

[[migrations]]
tag = "v1"
new_sqlite_classes = ["Probe"]
"""


def probe(tmp_path: Path, source: str = PROBE, **kwargs: Any) -> Harness:
    (tmp_path / "probe.py").write_text(textwrap.dedent(source))
    (tmp_path / "wrangler.toml").write_text(PROBE_TOML)
    return Harness(tmp_path, **kwargs)


def log(h: Harness) -> list[str]:
    return [r["line"] for r in h.sql("PROBE", "one", "SELECT line FROM log")]


async def test_set_alarm_is_awaitable_and_get_alarm_returns_int_or_jsnull(tmp_path: Path) -> None:
    h = probe(tmp_path)
    at = h.now_ms + 5_000
    r = await h.fetch("GET", "/alarm", headers={"x-at": str(at)})
    assert r.status == 201 and r.json() == {"alarm": at} and r.headers["x-probe"] == "1"
    assert r.headers["content-type"] == "application/json"
    await h.fetch("GET", "/alarm", headers={"x-at": str(at + 1)})  # one alarm: replaced
    assert h.alarm_at("PROBE", "one") == at + 1
    r = await h.fetch("GET", "/no-alarm")
    assert r.json() == {"is_jsnull": True} and h.alarm_at("PROBE", "one") is None


async def test_alarm_fires_when_due_in_epoch_ms_and_survives_a_restart(tmp_path: Path) -> None:
    h = probe(tmp_path)
    at = h.now_ms + 5_000
    await h.fetch("GET", "/alarm", headers={"x-at": str(at)})
    await h.advance(4_999)
    assert not any(line.startswith("alarm") for line in log(h))
    h.restart()  # a pending alarm fires in the new process
    await h.advance(1)
    assert f"alarm at {at} retry 0" in log(h) and h.alarm_at("PROBE", "one") is None


async def test_a_failing_alarm_is_retried_with_backoff(tmp_path: Path) -> None:
    source = PROBE.replace('self.log(f"alarm at', 'raise RuntimeError("boom"); self.log(f"alarm at')
    h = probe(tmp_path, source, strict=False)
    await h.fetch("GET", "/alarm", headers={"x-at": str(h.now_ms + 1_000)})
    await h.advance(1_000)
    assert len(h.errors) == 1 and h.alarm_at("PROBE", "one") == h.now_ms + 2_000


async def test_accept_websocket_needs_a_js_array_of_tags(tmp_path: Path) -> None:
    h = probe(tmp_path)
    agent = await h.connect_agent("x", None)
    assert isinstance(agent, AgentClient)
    [line] = [line for line in log(h) if line.startswith("python list")]
    assert "TypeError" in line and "parameter 2 is not of type 'Array'" in line


async def test_frames_attachments_and_hibernation(tmp_path: Path) -> None:
    h = probe(tmp_path, hibernation="always")
    agent = await h.connect_agent("x", None)
    assert isinstance(agent, AgentClient)
    await agent.send("hello")
    await agent.send(b"bin")
    first, second = (json.loads(f) for f in agent.received())
    # text → str; binary → a JsProxy ArrayBuffer; the attachment survives; memory does not.
    assert first == {"is_str": True, "bytes": None, "attachment": "attached", "memory": 1, "sockets": 1}
    assert second["is_str"] is False and second["bytes"] == "bin" and second["memory"] == 1
    assert log(h).count("init") == h.record("PROBE", "one").constructions == 3  # __init__ ran per event
    await agent.close(4000, "bye")
    assert log(h)[-1] == "close 4000 bye True"


AUTO_PROBE = PROBE.replace(
    "from js import Date, WebSocketPair",
    "from js import Date, WebSocketPair, WebSocketRequestResponsePair",
).replace(
    """        if path == "/echo":""",
    """        if path == "/auto":
            try:
                self.ctx.setWebSocketAutoResponse(("ping", "pong"))
            except JsException as exc:
                self.log("tuple: " + str(exc))
            self.ctx.setWebSocketAutoResponse(WebSocketRequestResponsePair.new("ping", "pong"))
            pair = self.ctx.getWebSocketAutoResponse()
            return Response.json({"request": pair.request, "response": pair.response})
        if path == "/stamp":
            [ws] = self.ctx.getWebSockets("probe")
            stamp = self.ctx.getWebSocketAutoResponseTimestamp(ws)
            return Response.json({"is_jsnull": stamp is not None and not stamp, "ms": stamp.getTime() if stamp else None})
        if path == "/echo":""",
)


async def test_auto_response_answers_the_exact_request_without_waking_the_object(tmp_path: Path) -> None:
    # WORKERS_RUNTIME.md: setWebSocketAutoResponse(WebSocketRequestResponsePair.new(...)) from
    # Python; an auto-responded message wakes nothing (no constructor); the timestamp is a JS
    # Date or jsnull before the first one, and survives hibernation; exact match only.
    h = probe(tmp_path, AUTO_PROBE, hibernation="always")
    agent = await h.connect_agent("x", None)
    assert isinstance(agent, AgentClient)
    assert (await h.fetch("GET", "/auto")).json() == {"request": "ping", "response": "pong"}
    assert any(line.startswith("tuple: TypeError") for line in log(h))  # only the pair type
    assert (await h.fetch("GET", "/stamp")).json() == {"is_jsnull": True, "ms": None}
    record = h.record("PROBE", "one")
    built, wakes = record.constructions, record.wakes
    await h.advance(7_000)
    await agent.send("ping")
    assert agent.received() == ["pong"]
    assert (record.constructions, record.wakes, record.auto_responses) == (built, wakes, 1)
    h.evict()
    assert (await h.fetch("GET", "/stamp")).json() == {"is_jsnull": False, "ms": h.now_ms}
    await agent.send("ping ")  # not the exact string: the handler gets it
    assert json.loads(agent.received()[0])["is_str"] is True


async def test_without_hibernation_the_instance_is_kept(tmp_path: Path) -> None:
    h = probe(tmp_path, hibernation="never")
    agent = await h.connect_agent("x", None)
    assert isinstance(agent, AgentClient)
    await agent.send("a")
    await agent.send("b")
    assert [json.loads(f)["memory"] for f in agent.received()] == [1, 2]


async def test_requests_and_responses(tmp_path: Path) -> None:
    h = probe(tmp_path)
    r = await h.fetch("POST", "/echo", body=b"payload")
    assert r.json() == {
        "method": "POST",
        "url": "https://caisey.example.workers.dev/echo",
        "missing": None,
        "body": "payload",
    }


def test_request_body_is_read_once_and_get_has_no_body() -> None:
    import asyncio

    request = workers.Request("https://x.example/", method="POST", body="abc")
    assert asyncio.run(request.text()) == "abc"
    with pytest.raises(OSError, match="Body already used"):
        asyncio.run(request.text())
    with pytest.raises(JsException, match="GET or HEAD"):
        workers.Request("https://x.example/", method="GET", body="abc")


def test_null_body_statuses_refuse_a_body() -> None:
    assert workers.Response(None, status=304).status == 304
    with pytest.raises(JsException, match="null body status"):
        workers.Response("", status=204)


def test_the_builtin_sdk_has_no_websocketpair() -> None:
    assert not hasattr(workers, "WebSocketPair")  # it comes from `js`, as in workerd's own tests
    import js

    client, server = js.WebSocketPair.new()
    assert client != server and isinstance(client, JsProxy)


def test_to_js_makes_arrays_and_maps() -> None:
    assert len(to_js(["a", "b"])) == 2
    assert to_js({"a": 1}).get("a") == 1


async def test_randomness_at_import_fails_but_works_in_a_request(tmp_path: Path) -> None:
    source = "import secrets\nTOKEN = secrets.token_hex(4)\n" + PROBE
    with pytest.raises(OSError, match=r"\[Errno 29\] Cannot get entropy outside of request context"):
        probe(tmp_path, source)
    source = PROBE.replace("self.memory = []", "import secrets; self.memory = [secrets.token_hex(4)]")
    h = probe(tmp_path, source)
    assert isinstance(await h.connect_agent("x", None), AgentClient)


async def test_a_handler_exception_surfaces_as_handler_error(tmp_path: Path) -> None:
    h = probe(tmp_path, PROBE.replace("path = urlsplit", "1 / 0; path = urlsplit"))
    with pytest.raises(HandlerError, match="ZeroDivisionError"):
        await h.fetch("GET", "/echo")
    h.strict = False
    r = await h.fetch("GET", "/echo")
    assert isinstance(r, HttpResponse) and r.status == 500


def test_importing_the_real_entry_in_a_fresh_process_uses_no_entropy() -> None:
    """worker/entry.py and every module it imports, run top to bottom with entropy refused."""
    code = "from tests.workers_standin.harness import Harness; Harness(); print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# --- WebCrypto Ed25519 (WORKERS_RUNTIME.md, "Production runtime, WebCrypto Ed25519") -----------


async def test_webcrypto_ed25519_verifies_and_has_the_runtimes_pitfalls() -> None:
    from js import crypto

    from agent.identity import EndpointKey

    key = EndpointKey.generate()
    message, signature = b"caisey", key.sign(b"caisey")
    public = await crypto.subtle.importKey("raw", to_js(key.public_key), "Ed25519", False, to_js(["verify"]))
    assert await crypto.subtle.verify("Ed25519", public, to_js(signature), to_js(message)) is True
    assert await crypto.subtle.verify({"name": "Ed25519"}, public, to_js(signature), to_js(b"other")) is False
    # Raw bytes are not a BufferSource, a Python list is not an Array: both raise.
    with pytest.raises(JsException, match="BufferSource"):
        await crypto.subtle.verify("Ed25519", public, signature, to_js(message))
    with pytest.raises(JsException, match="parameter 5 is not of type 'Array'"):
        await crypto.subtle.importKey("raw", to_js(key.public_key), "Ed25519", False, ["verify"])
    # A wrong length raises instead of answering false.
    with pytest.raises(JsException, match="signature length 63"):
        await crypto.subtle.verify("Ed25519", public, to_js(signature[:63]), to_js(message))
    with pytest.raises(JsException, match="exactly 32-bytes"):
        await crypto.subtle.importKey("raw", to_js(key.public_key[:31]), "Ed25519", False, to_js(["verify"]))


async def test_the_worker_counts_a_raising_signature_check_as_unverified() -> None:
    from agent.identity import EndpointKey
    from caisey.signing import SignatureClaim
    from worker.entry import webcrypto_verified

    key = EndpointKey.generate()
    good = SignatureClaim(key.public_key, b"m", key.sign(b"m"))
    forged = SignatureClaim(key.public_key, b"m", EndpointKey.generate().sign(b"m"))
    short = SignatureClaim(key.public_key, b"m", key.sign(b"m")[:63])
    assert await webcrypto_verified([good, forged, short]) == [good]


# --- "Observed later": attachments up to 16 KiB, close states ---------------------------------------

CLOSING_PROBE = PROBE.replace(
    """    async def webSocketMessage(self, ws, message):
        self.memory.append(message)""",
    """    async def webSocketMessage(self, ws, message):
        if message.startswith("attach:"):
            try:
                ws.serializeAttachment("x" * int(message[7:]))
                ws.send("attached " + str(len(ws.deserializeAttachment())))
            except JsException as exc:
                ws.send("refused: " + str(exc))
            return
        if message == "close yourself":
            ws.close(4001, "by the object")
            return
        self.memory.append(message)""",
).replace(
    """    async def webSocketClose(self, ws, code, reason, was_clean):
        self.log(f"close {code} {reason} {was_clean}")""",
    """    async def webSocketClose(self, ws, code, reason, was_clean):
        listed = [s for s in self.ctx.getWebSockets() if s == ws]
        try:
            ws.close(1000, "")
            closed = "close() ok"
        except JsException as exc:
            closed = "close() raised " + str(exc)
        self.log(f"close {code} {reason!r} {was_clean} listed={len(listed)} "
                 f"state={listed[0].readyState if listed else None} {closed}")""",
)


async def test_attachments_up_to_16_kib(tmp_path: Path) -> None:
    h = probe(tmp_path, CLOSING_PROBE)
    agent = await h.connect_agent("x", None)
    assert isinstance(agent, AgentClient)
    await agent.send("attach:16000")
    await agent.send("attach:17000")
    ok, refused = agent.received()
    assert ok == "attached 16000"
    assert refused.startswith("refused: ") and "cannot be larger than 16384 bytes" in refused


async def test_close_started_by_the_peer_lists_the_socket_closing(tmp_path: Path) -> None:
    h = probe(tmp_path, CLOSING_PROBE)
    agent = await h.connect_agent("x", None)
    assert isinstance(agent, AgentClient)
    await agent.close(1000, "bye")
    assert log(h)[-1] == "close 1000 'bye' True listed=1 state=2 close() ok"


async def test_close_started_by_the_object_is_still_delivered_and_listed_closed(tmp_path: Path) -> None:
    h = probe(tmp_path, CLOSING_PROBE)
    agent = await h.connect_agent("x", None)
    assert isinstance(agent, AgentClient)
    await agent.send("close yourself")
    assert (agent.closed, agent.close_code, agent.close_reason) == (True, 4001, "by the object")
    # webSocketClose comes with the peer's reply code (aiohttp answers 1000), the socket CLOSED
    assert log(h)[-1] == "close 1000 '' True listed=1 state=3 close() ok"
    assert h.record("PROBE", "one").live_sockets() == []  # gone once the handler has run


async def test_an_abrupt_drop_is_1006_with_workerd_reason(tmp_path: Path) -> None:
    h = probe(tmp_path, CLOSING_PROBE)
    agent = await h.connect_agent("x", None)
    assert isinstance(agent, AgentClient)
    await agent.drop()
    assert log(h)[-1] == (
        "close 1006 'WebSocket disconnected without sending Close frame.' False listed=1 state=2 close() ok"
    )
