"""Stand-in for the runtime's built-in ``workers`` SDK (compatibility dates before 2026-04-21).

Mirrors workerd's ``src/pyodide/internal/workers-api/src/workers/_workers.py`` in the parts a
Worker here uses: ``Request`` (``method`` is an ``HTTPMethod``, ``headers`` an
``http.client.HTTPMessage``, bodies readable once), ``Response`` (``Response.json(obj, …)``
used statically builds a JSON response; ``await resp.json()`` on an instance parses),
``DurableObject`` and ``WorkerEntrypoint``. Like the real SDK it does **not** export
``WebSocketPair`` — that comes from ``js``.
"""

from __future__ import annotations

import http.client
import json as _json
from collections.abc import Iterable
from http import HTTPMethod, HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import _standin_runtime as _rt
from _standin_runtime import JsException, JsProxy

_NULL_BODY_STATUSES = {101, 204, 205, 304}


def _header_list(headers: Any) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, dict):
        items: Iterable[Any] = headers.items()
    elif isinstance(headers, list):
        items = headers
    elif isinstance(headers, _JsHeaders):
        return list(headers.items)
    else:
        raise TypeError("Received unexpected type for headers argument")
    return [(str(k).lower(), str(v)) for k, v in items]


class _JsHeaders(JsProxy):
    __slots__ = ("items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items

    def get(self, name: str) -> Any:
        values = [v for k, v in self.items if k == name.lower()]
        return ", ".join(values) if values else _rt.jsnull

    def has(self, name: str) -> bool:
        return any(k == name.lower() for k, _ in self.items)


def _body_bytes(body: Any) -> bytes | None:
    kind, value = _rt.implicit(body)
    if kind == "undefined" or kind == "null":
        return None
    if kind == "string":
        return value.encode()
    if kind == "arraybuffer":
        return value.to_bytes()
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise JsException("TypeError", f"stand-in: unsupported body type {type(body).__name__}")


class _JsRequest(JsProxy):
    """A JS ``Request``."""

    __slots__ = ("body", "bodyUsed", "headers", "method", "url")

    def __init__(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise JsException("TypeError", f"Fetch API cannot load: {url}")
        method = str(method).upper()
        data = _body_bytes(body)
        if data is not None and method in ("GET", "HEAD"):
            raise JsException("TypeError", "Request with a GET or HEAD method cannot have a body.")
        self.url = url
        self.method = method
        self.headers = _JsHeaders(_header_list(headers))
        self.body = data
        self.bodyUsed = False

    def copy(self) -> _JsRequest:
        if self.bodyUsed:
            raise JsException(
                "TypeError", "Cannot construct a Request with a Request object that has already been used."
            )
        return _JsRequest(self.url, self.method, list(self.headers.items), self.body)


class _JsResponse(JsProxy):
    """A JS ``Response``."""

    __slots__ = ("body", "bodyUsed", "headers", "status", "statusText", "url", "webSocket")

    def __init__(
        self, body: bytes | None, status: int, status_text: str, headers: list[tuple[str, str]], web_socket: Any
    ) -> None:
        if status == 101:
            if web_socket is None:
                raise JsException(
                    "RangeError",
                    "Responses may only be constructed with status codes in the range 200 to 599, inclusive.",
                )
        elif not 200 <= status <= 599:
            raise JsException(
                "RangeError", "Responses may only be constructed with status codes in the range 200 to 599, inclusive."
            )
        if status in _NULL_BODY_STATUSES and body is not None:
            raise JsException("TypeError", "Response with null body status cannot have body")
        self.body = body
        self.bodyUsed = False
        self.status = status
        self.statusText = status_text
        self.headers = _JsHeaders(headers)
        self.url = ""
        self.webSocket = web_socket


class Request:
    """The SDK's ``Request`` (what a ``fetch`` handler receives)."""

    def __init__(self, input: Any, **other_options: Any) -> None:
        if isinstance(input, _JsRequest):
            if other_options:
                raise ValueError("Expected no options when constructing Request from a js.Request")
            self._js_request = input
            return
        if isinstance(input, Request):
            base = input._js_request.copy()
            self._js_request = _JsRequest(
                base.url,
                other_options.get("method", base.method),
                other_options.get("headers", list(base.headers.items)),
                other_options.get("body", base.body),
            )
            return
        method = other_options.get("method", "GET")
        if isinstance(method, HTTPMethod):
            method = method.value
        self._js_request = _JsRequest(str(input), method, other_options.get("headers"), other_options.get("body"))

    def __repr__(self) -> str:
        return f"Request(method={self._js_request.method!r}, url={self._js_request.url!r})"

    @property
    def js_object(self) -> _JsRequest:
        return self._js_request

    @property
    def body_used(self) -> bool:
        return self._js_request.bodyUsed

    @property
    def headers(self) -> http.client.HTTPMessage:
        result = http.client.HTTPMessage()
        for key, value in self._js_request.headers.items:
            result[key] = value.strip()
        return result

    @property
    def method(self) -> HTTPMethod:
        return HTTPMethod[self._js_request.method]

    @property
    def url(self) -> str:
        return self._js_request.url

    def _consume(self) -> bytes:
        if self._js_request.bodyUsed:
            raise OSError("Body already used")
        self._js_request.bodyUsed = self._js_request.body is not None
        return self._js_request.body or b""

    async def bytes(self) -> bytes:
        return self._consume()

    async def text(self) -> str:
        return self._consume().decode("utf-8", errors="replace")

    async def json(self, **kwargs: Any) -> Any:
        return _json.loads(await self.text(), **kwargs)

    def clone(self) -> Request:
        return Request(self._js_request.copy())


class FetchResponse:
    """``pyodide.http.FetchResponse`` as the SDK extends it."""

    def __init__(self, url: str, js_response: _JsResponse) -> None:
        self._url = url
        self.js_response = js_response

    @property
    def js_object(self) -> _JsResponse:
        return self.js_response

    @property
    def status(self) -> int:
        return self.js_response.status

    @property
    def status_text(self) -> str:
        return self.js_response.statusText

    @property
    def ok(self) -> bool:
        return 200 <= self.status <= 299

    @property
    def url(self) -> str:
        return self._url

    @property
    def headers(self) -> dict[str, str]:
        # Pyodide's FetchResponse.headers is a dict; repeated headers are joined.
        result: dict[str, str] = {}
        for key, value in self.js_response.headers.items:
            result[key] = f"{result[key]}, {value}" if key in result else value
        return result

    @property
    def body_used(self) -> bool:
        return self.js_response.bodyUsed

    def _consume(self) -> bytes:
        if self.js_response.bodyUsed:
            raise OSError("Body already used")
        self.js_response.bodyUsed = self.js_response.body is not None
        return self.js_response.body or b""

    async def bytes(self) -> bytes:
        return self._consume()

    async def text(self) -> str:
        return self._consume().decode("utf-8", errors="replace")

    async def json(self, **kwargs: Any) -> Any:
        return _json.loads(await self.text(), **kwargs)


class Response(FetchResponse):
    """The SDK's ``Response``: ``Response(body, status=, status_text=, headers=, web_socket=)``."""

    def __init__(
        self,
        body: Any = None,
        status: HTTPStatus | int | None = None,
        status_text: str = "",
        headers: Any = None,
        web_socket: Any = None,
    ) -> None:
        if isinstance(body, _JsResponse):
            if status is not None or status_text or headers is not None:
                raise ValueError("Expected no options when constructing Response from a js.Response")
            super().__init__(body.url, body)
            return
        if body is not None and not isinstance(body, str | bytes) and not isinstance(body, _rt.JsBuffer):
            raise TypeError(f"Unsupported type in Response: {type(body).__name__}")
        header_list = _header_list(headers)
        if isinstance(body, str) and not any(k == "content-type" for k, _ in header_list):
            header_list.append(("content-type", "text/plain;charset=UTF-8"))
        code = status.value if isinstance(status, HTTPStatus) else (status or 200)
        super().__init__("", _JsResponse(_body_bytes(body), int(code), status_text, header_list, web_socket))

    @staticmethod
    def from_json(
        data: Any, status: HTTPStatus | int = HTTPStatus.OK, status_text: str = "", headers: Any = None
    ) -> Response:
        header_list = _header_list(headers)
        if not any(k == "content-type" for k, _ in header_list):
            header_list.append(("content-type", "application/json"))
        return Response(_json.dumps(data), status=status, status_text=status_text, headers=header_list)

    def json(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if isinstance(self, Response):
            return super().json()
        # Static use, as in the SDK: ``Response.json(obj, status=201)`` builds a JSON response.
        return Response.from_json(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"Response(status={self.status})"


class DurableObject:
    """Base class of a Durable Object; a new instance may be made for any event."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env


class WorkerEntrypoint:
    """Base class of a Worker entrypoint (``Default`` handles the Worker's requests)."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env


async def fetch(resource: Any, **other_options: Any) -> Response:
    raise JsException("Error", "stand-in: outbound fetch() is not emulated")


__all__ = ["DurableObject", "FetchResponse", "Request", "Response", "WorkerEntrypoint", "fetch"]
