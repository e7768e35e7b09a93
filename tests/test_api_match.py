"""``worker.api.match`` keeps its answers for recent short paths (it runs 3-4 times per
request): a kept answer must be the one a fresh scan of the route table gives, and a refusal
is never kept (raised again every time)."""

from __future__ import annotations

import pytest

from worker import api
from worker.api import _ROUTES, ApiError, match


def _example(pattern: str) -> str:
    """A concrete path for a route pattern (named groups filled in)."""
    import re

    fill = {"eid": "laptop-1", "pid": "p_0123456789ab", "name": "night-shift", "client": "Acme", "site": "HQ"}
    path = pattern.strip("^$")
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: fill.get(m.group(1), "x"), path)
    return path.replace("\\", "")


def test_a_kept_answer_is_the_fresh_one_for_every_route() -> None:
    api._match_recent.cache_clear()
    for method, pattern, actor, op, _auth in _ROUTES:
        path = _example(pattern.pattern)
        fresh = api._match(method, path)
        assert (fresh.actor, fresh.op) == (actor, op), path
        assert match(method, path) == fresh
        assert match(method, path) == fresh  # the kept one
    assert api._match_recent.cache_info().hits >= len(_ROUTES)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/no-such-thing", 404, "not_found"),
        ("DELETE", "/api/endpoints/laptop-1/prompts", 405, "method_not_allowed"),
        ("GET", "/api/endpoints/bad%20id/prompts", 400, "invalid_endpoint_id"),
    ],
)
def test_a_refusal_is_raised_every_time_and_never_kept(method: str, path: str, status: int, code: str) -> None:
    api._match_recent.cache_clear()
    for _ in range(3):
        with pytest.raises(ApiError) as refused:
            match(method, path)
        assert (refused.value.status, refused.value.code) == (status, code)
    assert api._match_recent.cache_info().currsize == 0


def test_a_long_path_is_matched_afresh_and_not_kept() -> None:
    api._match_recent.cache_clear()
    path = f"/api/endpoints/{'a' * 64}/prompts/p_{'b' * api.MATCH_CACHE_MAX_PATH}"
    assert len(path) > api.MATCH_CACHE_MAX_PATH
    assert match("GET", path) == api._match("GET", path)
    assert api._match_recent.cache_info().currsize == 0
