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


class console:
    @staticmethod
    def log(*args: Any) -> None:
        print(*args)

    @staticmethod
    def error(*args: Any) -> None:
        import sys

        print(*args, file=sys.stderr)


__all__ = ["Date", "Object", "WebSocketPair", "WebSocketRequestResponsePair", "console", "crypto"]
