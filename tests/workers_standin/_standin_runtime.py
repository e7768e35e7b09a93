"""The JavaScript side of the stand-in: what a Python Worker reaches through Pyodide.

Everything here behaves as ``docs/WORKERS_RUNTIME.md`` records for workerd with the
built-in ``workers`` SDK (Pyodide 0.28, compatibility date before 2026-04-21). Where the
record is silent the choice is marked "unverified" and listed in README.md.

The model of Pyodide's foreign function interface:

- A Python value handed to a JS API is converted *implicitly*: ``None`` → undefined,
  ``bool``/``int``/``float``/``str`` → primitives (an ``int`` beyond ±(2**53 - 1) becomes a
  BigInt), a ``JsProxy`` → the JS value it wraps, anything else (``list``, ``dict``,
  ``bytes``…) → a PyProxy, which JS APIs do not treat as an array or a plain value.
  ``to_js`` converts deeply and explicitly (``list`` → ``Array``).
- A JS value handed back is a ``JsProxy`` unless it is a primitive; JS ``null`` is
  ``jsnull`` (falsy, but not ``None``).

The storage, socket and alarm state of a Durable Object lives in an ``ObjectRecord``
owned by the harness; the ``DurableObjectState`` an instance sees is a view of it, so a
new instance (hibernation) sees the same storage and sockets and nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import random
import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1
# Documented Durable Object limits the stand-in enforces.
MAX_ATTACHMENT_BYTES = 16_384  # serializeAttachment (WORKERS_RUNTIME.md, observed)
MAX_TAGS = 10  # acceptWebSocket
MAX_TAG_CHARS = 256
MAX_HIBERNATABLE_SOCKETS = 32_768
MAX_AUTO_RESPONSE_CHARS = 2048  # setWebSocketAutoResponse: request and response each

# WebSocket.readyState
CONNECTING, OPEN, CLOSING, CLOSED = 0, 1, 2, 3


# --- the virtual clock (Date.now) -------------------------------------------------------------


class Clock:
    """``Date.now()``. In production it does not advance while code runs without I/O; here it
    advances only when the harness says so, which is the same thing seen from the code."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms


CLOCK = Clock(1_795_683_600_000)  # 2026-11-26T09:00:00Z; the harness installs its own


# --- Pyodide's JsProxy family ------------------------------------------------------------------


class JsProxy:
    """Base of every JS value seen from Python."""

    __slots__ = ()

    def to_py(self, *, depth: int = -1, default_converter: Any = None) -> Any:
        return self


class JsNull:
    """``pyodide.ffi.jsnull``: JS ``null``. Falsy, but ``jsnull is None`` is False."""

    _instance: JsNull | None = None
    __slots__ = ()

    def __new__(cls) -> JsNull:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "jsnull"


jsnull = JsNull()


class JsException(Exception):
    """A JS error surfacing in Python: ``str(e)`` is ``"<name>: <message>"`` like JS's toString."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class JsObject(JsProxy):
    """A plain JS object (``{…}``): attribute access only; not subscriptable, not iterable."""

    __slots__ = ("_props",)

    def __init__(self, props: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_props", dict(props or {}))

    def __getattr__(self, name: str) -> Any:
        props = object.__getattribute__(self, "_props")
        if name in props:
            return props[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._props[name] = value

    def __dir__(self) -> list[str]:
        return sorted(self._props)

    def to_py(self, *, depth: int = -1, default_converter: Any = None) -> dict[str, Any]:
        return {k: to_py(v) for k, v in self._props.items()}

    def __repr__(self) -> str:
        return "[object Object]"


# Pyodide's JsProxy is a C type named "pyodide.ffi.JsProxy": CPython's own messages then read
# "'pyodide.ffi.JsProxy' object is not subscriptable" (and "… is not iterable", "has no len()").
JsObject.__name__ = "pyodide.ffi.JsProxy"


class JsArray(JsProxy):
    """A JS array: ``len``, integer index, iteration, ``.length``, ``.to_py()`` → list."""

    __slots__ = ("_items",)

    def __init__(self, items: list[Any] | None = None) -> None:
        self._items = list(items or [])

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Any:
        if not isinstance(index, int):
            raise TypeError("JsArray indices must be integers")
        return self._items[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._items))

    @property
    def length(self) -> int:
        return len(self._items)

    def to_py(self, *, depth: int = -1, default_converter: Any = None) -> list[Any]:
        return [to_py(v) for v in self._items]

    def __repr__(self) -> str:
        return ",".join("" if v is None or v is jsnull else str(v) for v in self._items)


JsArray.__name__ = "pyodide.ffi.JsArray"


class JsMap(JsProxy):
    """A JS ``Map`` (what ``to_js(dict)`` makes without a ``dict_converter``)."""

    __slots__ = ("_entries",)

    def __init__(self, entries: dict[Any, Any]) -> None:
        self._entries = dict(entries)

    def get(self, key: Any) -> Any:
        return self._entries.get(key)

    def has(self, key: Any) -> bool:
        return key in self._entries

    @property
    def size(self) -> int:
        return len(self._entries)

    def to_py(self, *, depth: int = -1, default_converter: Any = None) -> dict[Any, Any]:
        return {k: to_py(v) for k, v in self._entries.items()}


class JsBuffer(JsProxy):
    """An ``ArrayBuffer`` / ``Uint8Array`` (a binary WebSocket frame, a BLOB column)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)

    @property
    def byteLength(self) -> int:
        return len(self._data)

    def to_bytes(self) -> bytes:
        return self._data

    def to_py(self, *, depth: int = -1, default_converter: Any = None) -> JsBuffer:
        return self  # Pyodide leaves buffers as proxies in to_py()


class JsPromise(JsProxy):
    """A settled JS promise (what ``setAlarm`` & co. return): awaitable, and — like a JS
    promise — the operation has happened whether or not anyone awaits it."""

    __slots__ = ("_error", "_value")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value, self._error = value, error

    def __await__(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value
        yield  # pragma: no cover — makes this a generator


class PyProxy:
    """What JS receives for a Python object that is not converted implicitly."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


def to_py(value: Any) -> Any:
    return value.to_py() if isinstance(value, JsProxy) else value


def to_js(
    obj: Any,
    *,
    depth: int = -1,
    pyproxies: Any = None,
    create_pyproxies: bool = True,
    dict_converter: Callable[[Any], Any] | None = None,
    default_converter: Callable[..., Any] | None = None,
) -> Any:
    """``pyodide.ffi.to_js``: deep conversion; ``list``/``tuple`` → Array, ``dict`` → Map (or
    ``dict_converter(entries)``), bytes-likes → Uint8Array."""
    if obj is None or obj is jsnull or isinstance(obj, bool | int | float | str | JsProxy):
        return obj
    if isinstance(obj, list | tuple):
        return JsArray([to_js(v, dict_converter=dict_converter) for v in obj])
    if isinstance(obj, dict):
        converted = {k: to_js(v, dict_converter=dict_converter) for k, v in obj.items()}
        if dict_converter is not None:
            return dict_converter(JsArray([JsArray([k, v]) for k, v in converted.items()]))
        return JsMap(converted)
    if isinstance(obj, bytes | bytearray | memoryview):
        return JsBuffer(bytes(obj))
    if default_converter is not None:
        return default_converter(obj, lambda v: to_js(v), {})
    return PyProxy(obj)


def implicit(value: Any) -> tuple[str, Any]:
    """What a JS API receives for a Python argument (no ``to_js``): ``(js_type, value)``."""
    if value is None:
        return "undefined", None
    if value is jsnull:
        return "null", None
    if isinstance(value, bool):
        return "boolean", value
    if isinstance(value, int):
        return ("number", value) if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else ("bigint", value)
    if isinstance(value, float):
        return "number", value
    if isinstance(value, str):
        return "string", value
    if isinstance(value, JsArray):
        return "array", value
    if isinstance(value, JsBuffer):
        return "arraybuffer", value
    if isinstance(value, JsProxy):
        return "object", value
    return "pyproxy", PyProxy(value)


def from_js_number(value: float | int) -> int | float:
    """A JS number seen from Python: integral values become ``int`` (as Pyodide does)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
        return int(float(value))  # a double cannot hold it exactly
    return value


def relaxed_call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn`` with as many positional arguments as it accepts (workerd calls handlers
    "relaxed": a Python ``alarm(self)`` works although the runtime passes alarm info)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return fn(*args)
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return fn(*args)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return fn(*args[: len(positional)])


# --- entropy outside a request ------------------------------------------------------------------


def _no_entropy(*_args: Any, **_kwargs: Any) -> Any:
    raise OSError(29, "Cannot get entropy outside of request context")


_RANDOM_FUNCTIONS = (
    "random",
    "uniform",
    "randint",
    "choice",
    "choices",
    "randrange",
    "sample",
    "shuffle",
    "getrandbits",
    "randbytes",
    "gauss",
    "normalvariate",
    "triangular",
    "expovariate",
    "betavariate",
    "binomialvariate",
)


@contextlib.contextmanager
def no_entropy() -> Iterator[None]:
    """Module top level in workerd: ``os.urandom``, ``secrets``, ``uuid4`` and ``random``
    raise ``OSError: [Errno 29] Cannot get entropy outside of request context``."""
    saved: list[tuple[Any, str, Any]] = [(os, "urandom", os.urandom), (random, "_urandom", random._urandom)]  # type: ignore[attr-defined]
    saved += [(random, name, getattr(random, name)) for name in _RANDOM_FUNCTIONS if hasattr(random, name)]
    for module, name, _ in saved:
        setattr(module, name, _no_entropy)
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


# --- SQL storage (ctx.storage.sql) ---------------------------------------------------------------

_TRANSACTION_MESSAGE = (
    "To execute a transaction, please use the state.storage.transaction() or "
    "state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT "
    "statements. The JavaScript API is safer because it will automatically roll back on "
    "exceptions, and because it interacts correctly with Durable Objects' automatic atomic "
    "write coalescing."
)
_TRANSACTION_KEYWORDS = {"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"}
_LEADING = re.compile(r"^(\s+|--[^\n]*\n?|/\*.*?\*/)*", re.S)


def _sqlite_code_suffix(exc: sqlite3.Error) -> str:
    code = getattr(exc, "sqlite_errorcode", None)
    extended = getattr(exc, "sqlite_errorname", None)
    if code is None:
        return "SQLITE_ERROR"
    primary = _PRIMARY_NAMES.get(code & 0xFF, "SQLITE_ERROR")
    if extended and extended != primary:
        return f"{primary} (extended: {extended})"
    return primary


_PRIMARY_NAMES = {
    1: "SQLITE_ERROR",
    2: "SQLITE_INTERNAL",
    3: "SQLITE_PERM",
    4: "SQLITE_ABORT",
    5: "SQLITE_BUSY",
    6: "SQLITE_LOCKED",
    7: "SQLITE_NOMEM",
    8: "SQLITE_READONLY",
    9: "SQLITE_INTERRUPT",
    10: "SQLITE_IOERR",
    11: "SQLITE_CORRUPT",
    12: "SQLITE_NOTFOUND",
    13: "SQLITE_FULL",
    14: "SQLITE_CANTOPEN",
    15: "SQLITE_PROTOCOL",
    16: "SQLITE_EMPTY",
    17: "SQLITE_SCHEMA",
    18: "SQLITE_TOOBIG",
    19: "SQLITE_CONSTRAINT",
    20: "SQLITE_MISMATCH",
    21: "SQLITE_MISUSE",
    23: "SQLITE_AUTH",
    25: "SQLITE_RANGE",
    26: "SQLITE_NOTADB",
}


def _split_statements(query: str) -> list[str]:
    """Split a script into complete statements (``exec`` runs several)."""
    statements, current = [], ""
    for piece in query.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \t\r\n;"):
                statements.append(current)
            current = ""
    if current.strip(" \t\r\n;"):
        statements.append(current)
    return statements or [query]


def _sql_value(value: Any) -> Any:
    """A bound Python value as the SQLite value the Durable Object stores."""
    kind, js = implicit(value)
    if kind in ("undefined", "null"):
        return None
    if kind == "boolean":
        return "true" if js else "false"  # WORKERS_RUNTIME.md: a bound True is the text 'true'
    if kind == "bigint":
        raise JsException("TypeError", "Cannot convert a BigInt value to a number")
    if kind == "number":
        return float(js)  # a JS number: typeof(v) = 'real' where the column has no affinity
    if kind == "string":
        return js
    if kind == "arraybuffer":
        return js.to_bytes()
    if kind == "pyproxy":
        # WORKERS_RUNTIME.md: a bound Python dict is stored as its Python text ("{'x': 1}").
        return str(value)
    return "[object Object]"  # a JS object (e.g. to_js(d, dict_converter=Object.fromEntries))


def _py_value(value: Any) -> Any:
    """A stored SQLite value as the Python value a JsProxy row gives back."""
    if value is None:
        return jsnull
    if isinstance(value, int | float):
        return from_js_number(value)
    if isinstance(value, bytes):
        return JsBuffer(value)
    return value


class SqlCursor(JsProxy):
    """``SqlStorageCursor``: a one-shot iterator over the result rows."""

    __slots__ = ("_columns", "_pos", "_rows", "rowsRead", "rowsWritten")

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]], rows_written: int) -> None:
        self._columns = columns
        self._rows = rows
        self._pos = 0
        self.rowsRead = len(rows)  # unverified: the real count includes rows scanned
        self.rowsWritten = rows_written

    @property
    def columnNames(self) -> JsArray:
        return JsArray(list(self._columns))

    def _row(self, values: tuple[Any, ...]) -> JsObject:
        return JsObject({name: _py_value(v) for name, v in zip(self._columns, values, strict=True)})

    def _take(self) -> list[tuple[Any, ...]]:
        rest, self._pos = self._rows[self._pos :], len(self._rows)
        return rest

    def toArray(self) -> JsArray:
        return JsArray([self._row(values) for values in self._take()])

    def one(self) -> JsObject:
        rest = self._take()
        if not rest:
            raise JsException("Error", "Expected exactly one result from SQL query, but got no results.")
        if len(rest) > 1:
            raise JsException("Error", "Expected exactly one result from SQL query, but got multiple results.")
        return self._row(rest[0])

    def raw(self) -> Iterator[JsArray]:
        for values in self._take():
            yield JsArray([_py_value(v) for v in values])

    def next(self) -> JsObject:
        if self._pos >= len(self._rows):
            return JsObject({"done": True})
        values = self._rows[self._pos]
        self._pos += 1
        return JsObject({"done": False, "value": self._row(values)})

    def __iter__(self) -> Iterator[JsObject]:
        while self._pos < len(self._rows):
            values = self._rows[self._pos]
            self._pos += 1
            yield self._row(values)


class SqlStorage(JsProxy):
    """``ctx.storage.sql``."""

    __slots__ = ("_db",)

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    def exec(self, query: Any, *bindings: Any) -> SqlCursor:
        if not isinstance(query, str):
            raise JsException(
                "TypeError", "Failed to execute 'exec' on 'SqlStorage': parameter 1 is not of type 'string'."
            )
        statements = _split_statements(query)
        for statement in statements:
            keyword = _LEADING.sub("", statement).split(None, 1)
            if keyword and keyword[0].rstrip(";").upper() in _TRANSACTION_KEYWORDS:
                raise JsException("Error", _TRANSACTION_MESSAGE)
        values = [_sql_value(v) for v in bindings]
        if len(statements) > 1 and values:
            # WORKERS_RUNTIME.md: "only the last statement can have parameters".
            for statement in statements[:-1]:
                if self._db.has_parameters(statement):
                    raise JsException(
                        "Error", "A SQL query with multiple statements: only the last statement can have parameters."
                    )
        return self._db.run(statements, values)

    @property
    def databaseSize(self) -> int:
        return self._db.size()


_ASYNC_TRANSACTION_MESSAGE = (
    "stand-in: transactionSync() was given an async callback; workerd would run it later, "
    "outside the transaction — pass a plain (sync) callable"
)


class SqliteDatabase:
    """One Durable Object's SQLite database (in memory; it outlives every instance)."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.depth = 0
        # Statements that wrote (rows changed or the schema did, e.g. ``CREATE TABLE``). A
        # Durable Object with SQL storage has storage once one statement wrote; reads of an
        # empty database (``sqlite_master`` included) write nothing.
        self.writes = 0

    def has_parameters(self, statement: str) -> bool:
        """Whether ``statement`` has a parameter (compiled by EXPLAIN, not run)."""
        try:
            self.conn.execute("EXPLAIN " + statement, ())
        except sqlite3.ProgrammingError:
            return True  # "Incorrect number of bindings supplied"
        except sqlite3.Error:
            return False  # e.g. a table an earlier statement creates: run() reports it
        return False

    def run(self, statements: list[str], values: list[Any]) -> SqlCursor:
        before = self.conn.total_changes
        schema_before = self._schema_version()
        try:
            cursor = None
            for i, statement in enumerate(statements):
                cursor = self.conn.execute(statement, values if i == len(statements) - 1 else ())
            assert cursor is not None
            rows = cursor.fetchall()
            columns = [d[0] for d in cursor.description or ()]
        except sqlite3.Error as exc:
            raise JsException("Error", f"{exc}: {_sqlite_code_suffix(exc)}") from None
        changed = self.conn.total_changes - before
        if changed or self._schema_version() != schema_before:
            self.writes += 1
        return SqlCursor(columns, rows, changed)

    def _schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA schema_version").fetchone()[0])

    def size(self) -> int:
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        return int(pages * page_size)

    def transaction(self, fn: Any) -> Any:
        if not callable(fn):
            raise JsException(
                "TypeError",
                "Failed to execute 'transactionSync' on 'DurableObjectStorage': parameter 1 is not of type 'Function'.",
            )
        if inspect.iscoroutinefunction(fn):
            # Deliberately stricter than workerd, which accepts it, returns a pending future and
            # runs the writes later, outside the transaction (WORKERS_RUNTIME.md): a silent loss
            # of atomicity that a test should catch.
            raise JsException("TypeError", _ASYNC_TRANSACTION_MESSAGE)
        name = f"standin_tx_{self.depth}"
        self.conn.execute(f"SAVEPOINT {name}")
        self.depth += 1
        try:
            result = fn()
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()  # never run: no "was never awaited" warning
                raise JsException("TypeError", _ASYNC_TRANSACTION_MESSAGE)
        except BaseException:
            self.depth -= 1
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise  # the exception propagates unchanged (WORKERS_RUNTIME.md)
        self.depth -= 1
        self.conn.execute(f"RELEASE {name}")
        return result


# --- WebSockets ---------------------------------------------------------------------------------


class SocketState:
    """One end of a WebSocket pair. Proxies (``WebSocket``) are made fresh on every access,
    as Pyodide makes a new JsProxy each time a JS object crosses over: compare with ``==``."""

    def __init__(self, role: str) -> None:
        self.role = role  # "client" | "server"
        self.peer: SocketState | None = None
        self.ready_state = OPEN
        self.attachment: Any = None
        self.has_attachment = False
        self.tags: list[str] = []
        self.accepted = False  # by acceptWebSocket (hibernation API)
        self.owner: Any = None  # the ObjectRecord that accepted it
        self.inbox: list[str | bytes] = []  # frames this end received
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.on_server_close: Callable[[SocketState, int, str], None] | None = None
        self.auto_response_ms: int | None = None  # when the runtime last auto-responded on it


class JsDate(JsProxy):
    """A JS ``Date`` (what ``getWebSocketAutoResponseTimestamp`` returns)."""

    __slots__ = ("_ms",)

    def __init__(self, ms: int) -> None:
        self._ms = ms

    def getTime(self) -> int:
        return self._ms

    def __repr__(self) -> str:
        return f"Date({self._ms})"


class WebSocketRequestResponsePair(JsProxy):
    """``new WebSocketRequestResponsePair(request, response)`` (``.new(...)`` from Python)."""

    __slots__ = ("request", "response")

    def __init__(self, request: Any, response: Any) -> None:
        for name, value in (("request", request), ("response", response)):
            if not isinstance(value, str):
                raise JsException("TypeError", f"WebSocketRequestResponsePair {name} must be a string")
            if len(value) > MAX_AUTO_RESPONSE_CHARS:
                raise JsException(
                    "RangeError", f"{name.capitalize()} cannot be larger than {MAX_AUTO_RESPONSE_CHARS} bytes."
                )
        self.request, self.response = request, response

    @classmethod
    def new(cls, request: Any, response: Any) -> WebSocketRequestResponsePair:
        return cls(request, response)


class WebSocket(JsProxy):
    """A JS ``WebSocket`` as the Worker sees it."""

    __slots__ = ("_state",)

    def __init__(self, state: SocketState) -> None:
        self._state = state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WebSocket) and other._state is self._state

    def __hash__(self) -> int:
        return id(self._state)

    @property
    def readyState(self) -> int:
        return self._state.ready_state

    def send(self, message: Any) -> None:
        state = self._state
        if state.ready_state != OPEN:
            raise JsException("TypeError", "Can't call WebSocket send() after close().")
        kind, value = implicit(message)
        if kind == "string":
            frame: str | bytes = value
        elif kind == "arraybuffer":
            frame = value.to_bytes()
        else:
            raise JsException(
                "TypeError",
                "Failed to execute 'send' on 'WebSocket': parameter 1 is not of type 'string or ArrayBuffer'.",
            )
        assert state.peer is not None
        if state.peer.ready_state == OPEN:
            state.peer.inbox.append(frame)

    def close(self, code: Any = None, reason: Any = None) -> None:
        state = self._state
        if code is not None and not (code == 1000 or 3000 <= int(code) <= 4999):
            raise JsException("TypeError", f"Invalid WebSocket close code: {code}.")
        if reason is not None and len(str(reason).encode()) > 123:
            raise JsException("TypeError", "WebSocket close reason is too long.")
        if state.ready_state in (CLOSING, CLOSED):
            return
        state.ready_state = CLOSING
        code_value = 1005 if code is None else int(code)
        reason_text = "" if reason is None else str(reason)
        if state.on_server_close is not None:
            state.on_server_close(state, code_value, reason_text)

    def accept(self) -> None:
        raise JsException("Error", "stand-in: only the hibernation API (ctx.acceptWebSocket) is emulated")

    def serializeAttachment(self, value: Any) -> None:
        kind, js = implicit(value)
        if kind in ("pyproxy", "bigint") or (kind == "object" and not isinstance(js, JsArray | JsMap | JsObject)):
            raise JsException(
                "DataCloneError", "Failed to execute 'serializeAttachment' on 'WebSocket': could not be cloned."
            )
        size = len(repr(to_py(js)).encode())  # an estimate of the structured clone's size
        if size > MAX_ATTACHMENT_BYTES:
            raise JsException(
                "Error",
                f"Failed to execute 'serializeAttachment' on 'WebSocket': the serialized value "
                f"cannot be larger than {MAX_ATTACHMENT_BYTES} bytes",
            )
        self._state.attachment = copy.deepcopy(js)
        self._state.has_attachment = True

    def deserializeAttachment(self) -> Any:
        if not self._state.has_attachment:
            return jsnull
        return copy.deepcopy(self._state.attachment)


class WebSocketPair(JsProxy):
    """``new WebSocketPair()``: ``client, server = WebSocketPair.new()``."""

    __slots__ = ("_client", "_server")

    def __init__(self) -> None:
        client, server = SocketState("client"), SocketState("server")
        client.peer, server.peer = server, client
        self._client, self._server = client, server

    @classmethod
    def new(cls) -> WebSocketPair:
        return cls()

    def __iter__(self) -> Iterator[WebSocket]:
        return iter((WebSocket(self._client), WebSocket(self._server)))


# --- Durable Object state and storage -------------------------------------------------------------


class DurableObjectId(JsProxy):
    __slots__ = ("_hex", "name")

    def __init__(self, hex_id: str, name: str | None) -> None:
        self._hex = hex_id
        self.name = name

    def toString(self) -> str:
        return self._hex

    def equals(self, other: Any) -> bool:
        return isinstance(other, DurableObjectId) and other._hex == self._hex

    def __repr__(self) -> str:
        return self._hex


class DurableObjectStorage(JsProxy):
    """``ctx.storage`` of a SQLite-backed Durable Object (SQL + alarms; no KV API here)."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    @property
    def sql(self) -> SqlStorage:
        return SqlStorage(self._record.db)

    def transactionSync(self, fn: Any) -> Any:
        return self._record.db.transaction(fn)

    def setAlarm(self, scheduled_time: Any, options: Any = None) -> JsPromise:
        kind, value = implicit(scheduled_time)
        if kind != "number":
            raise JsException(
                "TypeError",
                "Failed to execute 'setAlarm' on 'DurableObjectStorage': parameter 1 is not of type 'number'.",
            )
        self._record.alarm_ms = int(value)  # one alarm per object: setting again replaces it
        return JsPromise(None)

    def getAlarm(self, options: Any = None) -> JsPromise:
        return JsPromise(jsnull if self._record.alarm_ms is None else self._record.alarm_ms)

    def deleteAlarm(self, options: Any = None) -> JsPromise:
        self._record.alarm_ms = None
        return JsPromise(None)


class DurableObjectState(JsProxy):
    """``ctx`` of a Durable Object instance: a view of its ``ObjectRecord``."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    @property
    def id(self) -> DurableObjectId:
        return self._record.id

    @property
    def storage(self) -> DurableObjectStorage:
        return DurableObjectStorage(self._record)

    def waitUntil(self, awaitable: Any) -> None:
        self._record.harness._wait_until(awaitable)

    def acceptWebSocket(self, ws: Any, tags: Any = None) -> None:
        if not isinstance(ws, WebSocket):
            raise JsException(
                "TypeError",
                "Failed to execute 'acceptWebSocket' on 'DurableObjectState': parameter 1 is not of type 'WebSocket'.",
            )
        kind, value = implicit(tags)
        if kind == "undefined":
            tag_list: list[str] = []
        elif kind == "array":
            tag_list = list(value)
        else:
            raise JsException(
                "TypeError",
                "Failed to execute 'acceptWebSocket' on 'DurableObjectState': parameter 2 is not of type 'Array'.",
            )
        if len(tag_list) > MAX_TAGS or any(not isinstance(t, str) or len(t) > MAX_TAG_CHARS for t in tag_list):
            raise JsException(
                "Error", f"a WebSocket may have at most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters"
            )
        state = ws._state
        if state.role != "server" or state.accepted:
            raise JsException("Error", "Can't accept() WebSocket that was already used in a response or accepted.")
        record = self._record
        if len(record.live_sockets()) >= MAX_HIBERNATABLE_SOCKETS:
            raise JsException("Error", "too many hibernatable WebSockets")
        state.accepted, state.owner, state.tags = True, record, tag_list
        state.on_server_close = record.harness._server_closed
        record.sockets.append(state)

    def getWebSockets(self, tag: Any = None) -> JsArray:
        sockets = [s for s in self._record.live_sockets() if tag is None or tag in s.tags]
        return JsArray([WebSocket(s) for s in sockets])

    def getTags(self, ws: WebSocket) -> JsArray:
        return JsArray(list(ws._state.tags))

    # --- auto-response: an exact text request answered by the runtime, the object not woken ---

    def setWebSocketAutoResponse(self, pair: Any = None) -> None:
        if pair is None:
            self._record.auto_response = None
            return
        if not isinstance(pair, WebSocketRequestResponsePair):
            raise JsException(
                "TypeError",
                "Failed to execute 'setWebSocketAutoResponse' on 'DurableObjectState': "
                "parameter 1 is not of type 'WebSocketRequestResponsePair'.",
            )
        self._record.auto_response = (pair.request, pair.response)  # one per object: replaces

    def getWebSocketAutoResponse(self) -> Any:
        pair = self._record.auto_response
        return jsnull if pair is None else WebSocketRequestResponsePair(*pair)

    def getWebSocketAutoResponseTimestamp(self, ws: Any) -> Any:
        if not isinstance(ws, WebSocket):
            raise JsException("TypeError", "parameter 1 is not of type 'WebSocket'.")
        stamp = ws._state.auto_response_ms
        return jsnull if stamp is None else JsDate(stamp)
