"""Helpers of the security tests (issue 11). The ``bridge`` fixture (the local host as a
real process, the Cloudflare adapter on the Workers stand-in) is tests/conftest.py's."""

from __future__ import annotations

import uuid


def eid() -> str:
    return "ep-" + uuid.uuid4().hex[:10]


PROMPT = {"title": "Allow remote control?", "message": "Alice from the help desk", "action": "remote_control"}
