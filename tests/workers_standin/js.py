"""Stand-in for Pyodide's ``js`` module (the JS global scope), limited to what a Worker here needs.

A name that is not emulated raises ``AttributeError`` / ``ImportError`` rather than pretending.
"""

from __future__ import annotations

from typing import Any

import _standin_runtime as _rt
from _standin_runtime import WebSocketPair, WebSocketRequestResponsePair


class Date:
    @staticmethod
    def now() -> int:
        """Milliseconds since the epoch, from the harness's virtual clock."""
        return _rt.CLOCK.now_ms


class Object:
    @staticmethod
    def fromEntries(entries: Any) -> _rt.JsObject:
        return _rt.JsObject({k: v for k, v in (tuple(e) for e in entries)})


class _CryptoKey(_rt.JsObject):
    """What ``importKey`` resolves to: opaque to Python, usable by ``verify``."""


def _buffer(value: Any, parameter: int) -> bytes:
    # The real runtime refuses Python bytes here ("parameter 3 is not of type 'BufferSource'"):
    # each must be converted with ``pyodide.ffi.to_js`` (WORKERS_RUNTIME.md).
    if not isinstance(value, _rt.JsBuffer):
        raise _rt.JsException("TypeError", f"parameter {parameter} is not of type 'BufferSource'.")
    return value.to_bytes()


def _algorithm_name(algorithm: Any) -> str:
    """The runtime takes the name, a dict or a JS object with ``name`` (WORKERS_RUNTIME.md)."""
    if isinstance(algorithm, str):
        return algorithm
    if isinstance(algorithm, dict):
        return str(algorithm.get("name", ""))
    return str(getattr(algorithm, "name", ""))


class _Subtle:
    """``crypto.subtle``, Ed25519 only, with the real runtime's pitfalls: unconverted bytes
    and Python lists are refused, and a wrong-length key or signature *raises* (instead of
    verifying as false). Verification is real (the ``cryptography`` package)."""

    def importKey(self, fmt: str, key_data: Any, algorithm: Any, extractable: bool, usages: Any) -> _rt.JsPromise:
        try:
            if not isinstance(usages, _rt.JsArray):
                raise _rt.JsException("TypeError", "parameter 5 is not of type 'Array'.")
            raw = _buffer(key_data, 2)
            if fmt != "raw" or _algorithm_name(algorithm) != "Ed25519":
                raise _rt.JsException("NotSupportedError", "Unrecognized or unimplemented algorithm")
            if len(raw) != 32:
                raise _rt.JsException("DataError", "Ed25519 raw keys must be exactly 32-bytes")
        except _rt.JsException as exc:
            return _rt.JsPromise(error=exc)
        return _rt.JsPromise(_CryptoKey({"type": "public", "algorithm": "Ed25519", "_raw": raw}))

    def verify(self, algorithm: Any, key: Any, signature: Any, data: Any) -> _rt.JsPromise:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            if _algorithm_name(algorithm) != "Ed25519" or not isinstance(key, _CryptoKey):
                raise _rt.JsException("InvalidAccessError", "key is not an Ed25519 key")
            sig, message = _buffer(signature, 3), _buffer(data, 4)
            if len(sig) != 64:
                raise _rt.JsException("OperationError", f"Invalid Ed25519 signature length {len(sig)}")
        except _rt.JsException as exc:
            return _rt.JsPromise(error=exc)
        try:
            Ed25519PublicKey.from_public_bytes(key._raw).verify(sig, message)
        except InvalidSignature:
            return _rt.JsPromise(False)
        return _rt.JsPromise(True)


class crypto:
    subtle = _Subtle()


# --- fetch (outbound HTTP; the bridge's webhooks) -------------------------------------------------


class _AbortSignal(_rt.JsObject):
    """What ``AbortSignal.timeout(ms)`` gives: ``fetch`` aborts after ``ms`` (real time here,
    as the runtime's timer is: an outbound request's wait is real I/O, not the virtual clock)."""


class AbortSignal:
    @staticmethod
    def timeout(ms: Any) -> _AbortSignal:
        return _AbortSignal({"_timeout_ms": int(ms)})


class _Pending(_rt.JsProxy):
    """A JS promise not yet settled: awaiting it runs the operation (real I/O)."""

    def __init__(self, coro: Any) -> None:
        self._coro = coro

    def __await__(self) -> Any:
        return self._coro.__await__()


def fetch(resource: Any, init: Any = None) -> _Pending:
    """The global ``fetch``, for outbound requests: really sent (aiohttp), as the runtime
    sends them. As in the runtime, ``init`` must be a JS object: a Python dict reaches ``fetch``
    as a proxy whose ``method``, ``headers`` and ``body`` it cannot read — the real runtime
    would then send a bodiless GET; the stand-in refuses it so a test catches the mistake
    (``to_js(init, dict_converter=Object.fromEntries)``). ``redirect: "manual"`` answers a
    3xx as it is; a network failure is ``TypeError: Network connection lost.``; the signal's
    timeout is ``TimeoutError: The operation was aborted due to timeout``. The answer has
    ``status``, ``ok`` and ``text()``."""
    if init is not None and not isinstance(init, _rt.JsObject):
        raise _rt.JsException("TypeError", "fetch: init must be a JS object (use to_js with Object.fromEntries)")

    async def run() -> _rt.JsObject:

        import aiohttp

        props = dict(object.__getattribute__(init, "_props")) if init is not None else {}
        headers = props.get("headers")
        headers = headers.to_py() if isinstance(headers, _rt.JsProxy) else dict(headers or {})
        signal = props.get("signal")
        timeout_s = signal._timeout_ms / 1000 if isinstance(signal, _AbortSignal) else None
        method = str(props.get("method") or "GET")
        body = props.get("body")
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
                session.request(
                    method,
                    str(resource),
                    headers={str(k): str(v) for k, v in headers.items()},
                    data=None if body is None else str(body).encode(),
                    allow_redirects=props.get("redirect") != "manual",
                ) as answer,
            ):
                text = await answer.text()
                status = answer.status
        except TimeoutError:
            raise _rt.JsException("TimeoutError", "The operation was aborted due to timeout") from None
        except (aiohttp.ClientError, OSError):
            raise _rt.JsException("TypeError", "Network connection lost.") from None
        return _rt.JsObject({"status": status, "ok": 200 <= status < 300, "text": lambda: _rt.JsPromise(text)})

    return _Pending(run())


class console:
    @staticmethod
    def log(*args: Any) -> None:
        print(*args)

    @staticmethod
    def error(*args: Any) -> None:
        import sys

        print(*args, file=sys.stderr)


__all__ = [
    "AbortSignal",
    "Date",
    "Object",
    "WebSocketPair",
    "WebSocketRequestResponsePair",
    "console",
    "crypto",
    "fetch",
]
