"""Checking real answers against worker/openapi.py's document (issue 13 item 4).

``conforms(method, path, status, headers, body)`` is the one check both the property test and
the flow tests use: the path is matched to its operation by the document's own templates, the
status must be one the operation documents, and a body must be what that status documents —
JSON validated (JSON Schema 2020-12, ``$ref`` resolved inside the document) against its schema,
the error envelope's ``code`` against the codes listed for that operation and status; the audit
export's JSON Lines line by line against ``AuditLine``. A path no operation has, or a method its
path does not document, must be the documented 404 ``not_found`` / 405 ``method_not_allowed``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any

from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from worker.openapi import DOCUMENT

BASE = "urn:caisey:openapi"
_REGISTRY: Registry = Registry().with_resource(BASE, Resource(contents=DOCUMENT, specification=DRAFT202012))
_VALIDATORS: dict[str, Draft202012Validator] = {}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def pointer(*parts: str) -> str:
    """A JSON pointer into the document (``~`` and ``/`` escaped)."""
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def validator(json_pointer: str) -> Draft202012Validator:
    if json_pointer not in _VALIDATORS:
        _VALIDATORS[json_pointer] = Draft202012Validator({"$ref": f"{BASE}#{json_pointer}"}, registry=_REGISTRY)
    return _VALIDATORS[json_pointer]


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    """``(METHOD, template, operation)`` for every documented operation."""
    return [
        (method.upper(), template, op)
        for template, item in DOCUMENT["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def _template_re(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$", re.S)


_TEMPLATES = [(template, _template_re(template)) for template in DOCUMENT["paths"]]


def template_of(path: str) -> str | None:
    """The documented path template ``path`` (decoded, no query) falls under, if any."""
    for template, pattern in _TEMPLATES:
        if pattern.match(path):
            return template
    return None


def invalid(schema_pointer: str, value: Any) -> str | None:
    errors = sorted(validator(schema_pointer).iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    return "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}" for e in errors[:5])


def conforms(method: str, path: str, status: int, headers: dict[str, str], raw: bytes) -> None:
    """Assert that this answer is one the document describes (see the module's doc)."""
    headers = {k.lower(): v for k, v in headers.items()}
    where = f"{method} {path[:120]!r} → {status}"
    template = template_of(path)
    item = DOCUMENT["paths"].get(template or "", {})
    op = item.get(method.lower())
    if op is None:
        expected = "method_not_allowed" if template is not None else "not_found"
        assert status == (405 if template is not None else 404), f"{where}: undocumented route answered {raw[:200]!r}"
        error = json.loads(raw)
        assert invalid(pointer("components", "schemas", "Error"), error) is None, (where, error)
        assert error["error"]["code"] == expected, (where, error)
        return
    responses = op["responses"]
    assert str(status) in responses, (
        f"{where}: status {status} is not documented for {op['operationId']} "
        f"(documented: {', '.join(responses)}); body {raw[:300]!r}"
    )
    response = responses[str(status)]
    content = response.get("content")
    if not content:
        assert not raw, f"{where}: documented without a body, got {raw[:200]!r}"
        return
    content_type = headers.get("content-type", "")
    media = next((m for m in content if content_type.split(";")[0].strip() == m.split(";")[0].strip()), None)
    assert media is not None, f"{where}: content-type {content_type!r}, documented {list(content)}"
    schema_at = pointer("paths", template or "", method.lower(), "responses", str(status), "content", media, "schema")
    if media.startswith("application/json"):
        body = json.loads(raw)
        problem = invalid(schema_at, body)
        assert problem is None, f"{where}: body does not match the document: {problem}\n{json.dumps(body)[:600]}"
        return
    line_ref = content[media].get("x-caisey-line-schema")
    assert line_ref is not None, f"{where}: {media} documented without a line schema"
    lines = raw.decode("utf-8").splitlines()
    assert lines, f"{where}: an empty {media} body"
    line_at = line_ref["$ref"].removeprefix("#")
    for number, line in enumerate(lines, 1):
        problem = invalid(line_at, json.loads(line))
        assert problem is None, f"{where}: line {number} does not match the document: {problem}\n{line[:400]}"


def documented_error_codes() -> set[tuple[int, str]]:
    """Every ``(status, code)`` the document names, on operations and for unrouted requests."""
    found: set[tuple[int, str]] = set()
    for _, _, op in operations():
        for status, response in op["responses"].items():
            for media in (response.get("content") or {}).values():
                schema = media["schema"]
                codes = schema.get("properties", {}).get("error", {}).get("properties", {}).get("code", {})
                found |= {(int(status), c) for c in codes.get("enum", [])}
                if schema.get("$ref", "").endswith("/AlreadyFinal"):
                    found.add((int(status), "already_final"))
                if schema.get("$ref", "").endswith("/WindowRefused"):  # issue 16
                    refused = DOCUMENT["components"]["schemas"]["WindowRefused"]["properties"]["error"]
                    found |= {(int(status), c) for c in refused["properties"]["code"]["enum"]}
    for status, codes in DOCUMENT["x-caisey-unrouted"].items():
        found |= {(int(status), c) for c in codes}
    return found


# --- values a schema accepts -------------------------------------------------------------------------


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a local ``$ref`` replaced by its target (siblings kept)."""
    while "$ref" in schema:
        target: Any = DOCUMENT
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


# Fixed for the process: a strategy's bounds must not move between Hypothesis' runs of one
# example (it replays the integers it drew; a bound that moved made it FlakyStrategyDefinition).
_NOW_S = int(time.time())


def _times() -> st.SearchStrategy[str]:
    return st.integers(_NOW_S - 86_400, _NOW_S + 8 * 86_400).map(
        lambda s: dt.datetime.fromtimestamp(s, tz=dt.UTC).isoformat().replace("+00:00", "Z")
    )


def _strings(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    patterns = [schema["pattern"]] if "pattern" in schema else []
    patterns += [s["pattern"] for s in schema.get("allOf", []) if "pattern" in s]
    low, high = schema.get("minLength", 0), schema.get("maxLength", 80)
    if schema.get("format") == "date-time" and not patterns:
        return _times()
    anchored = [p for p in patterns if p.startswith("^")]
    if anchored:
        base = st.from_regex(anchored[0], fullmatch=True)
    else:
        base = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=low, max_size=high)
    compiled = [re.compile(p) for p in patterns]
    return base.filter(lambda v: low <= len(v) <= high and all(c.search(v) for c in compiled))


def values(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values ``schema`` (a part of the document) accepts — modulo ``not``: filter with ``invalid``."""
    schema = resolve(schema)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([values(s) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        required = [k for k in schema.get("required", []) if k in properties]
        optional = {k: values(v) for k, v in properties.items() if k not in required}
        return st.fixed_dictionaries({k: values(properties[k]) for k in required}, optional=optional)
    if kind == "string":
        return _strings(schema)
    if kind in ("integer", "number"):
        low, high = schema.get("minimum", -(10**6)), schema.get("maximum", 10**6)
        integers = st.integers(int(low), int(high))
        if kind == "integer":
            return integers
        return st.one_of(integers, st.floats(low, high, allow_nan=False, allow_infinity=False))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(values(schema.get("items", {})), max_size=3)
    return st.none()


# --- the events the bridge sends (the document's top-level ``webhooks``) --------------------------------


def event_problem(headers: dict[str, str], body: bytes) -> str | None:
    """Why one webhook request (its headers and body as sent) is not what the document's
    ``webhooks`` entry for its type describes, or None when it is."""
    headers = {k.lower(): v for k, v in headers.items()}
    try:
        event = json.loads(body)
    except ValueError:
        return f"the body is not JSON: {body[:100]!r}"
    event_type = event.get("type") if isinstance(event, dict) else None
    entry = DOCUMENT["webhooks"].get(event_type) if isinstance(event_type, str) else None
    if entry is None:
        return f"event type {event_type!r} is not documented under webhooks"
    operation = entry["post"]
    for parameter in operation["parameters"]:
        name = parameter["name"].lower()
        if name not in headers:
            if parameter.get("required"):
                return f"{event_type}: header {name} missing"
            continue
        if not Draft202012Validator(parameter["schema"]).is_valid(headers[name]):
            return f"{event_type}: header {name}={headers[name][:80]!r} does not match {parameter['schema']}"
    if not headers.get("content-type", "application/json").startswith("application/json"):
        return f"{event_type}: content-type {headers['content-type']!r}"
    at = pointer("webhooks", event_type, "post", "requestBody", "content", "application/json", "schema")
    problem = invalid(at, event)
    return None if problem is None else f"{event_type}: {problem}"
