"""Stand-in for ``pyodide.ffi``: the names the Worker uses, behaving as Pyodide 0.28 does."""

from _standin_runtime import JsArray, JsBuffer, JsException, JsMap, JsNull, JsPromise, JsProxy, jsnull, to_js


def create_proxy(obj: object) -> object:
    return obj


def destroy_proxies(proxies: object) -> None:
    return None


__all__ = [
    "JsArray",
    "JsBuffer",
    "JsException",
    "JsMap",
    "JsNull",
    "JsPromise",
    "JsProxy",
    "create_proxy",
    "destroy_proxies",
    "jsnull",
    "to_js",
]
