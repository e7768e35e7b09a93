"""``caisey-agent`` commands that need no bridge: status, argument checks, the run lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import _run_lock, main
from agent.connection import agent_url
from agent.store import Store
from tests.agent_harness import T0, make_prompt


def _enrolled(state: Path) -> Store:
    store = Store.open(state)
    store.meta_set("endpoint_id", "ep-7")
    store.meta_set("bridge_url", "https://bridge.example")
    store.write_secret("cas_x")
    return store


def test_status_of_a_fresh_dir_says_not_enrolled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--state-dir", str(tmp_path / "none")]) == 1
    assert "not enrolled" in capsys.readouterr().out
    assert not (tmp_path / "none").exists()  # status never creates state


def test_status_lists_held_prompts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = _enrolled(tmp_path)
    with store.transaction():
        store.insert_prompt(make_prompt("P1"), "D1", T0, "received")
        store.insert_prompt(make_prompt("P2", title="Install the printer driver?"), "D2", T0, "received")
        store.update_prompt("P2", T0, status="decided", decision="deny", decided_at_ms=T0, how="user")
    store.close()
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "ep-7" in text and "https://bridge.example" in text and "not running" in text
    assert "1 open, 2 held" in text and "P2  decided" in text
    assert main(["status", "--json", "--state-dir", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [(p["prompt_id"], p["status"]) for p in info["prompts"]] == [("P2", "decided"), ("P1", "received")]
    assert info["online"] is False and info["open_prompts"] == 1


def test_run_needs_enrollment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--state-dir", str(tmp_path)]) == 1
    assert "enroll" in capsys.readouterr().err


def test_run_refuses_a_second_agent_on_the_same_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _enrolled(tmp_path).close()
    with _run_lock(tmp_path):
        assert main(["run", "--presenter", "exec:/bin/true", "--state-dir", str(tmp_path)]) == 1
    assert "another caisey-agent run" in capsys.readouterr().err


def test_run_refuses_an_unknown_presenter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _enrolled(tmp_path).close()
    assert main(["run", "--presenter", "popup", "--state-dir", str(tmp_path)]) == 1
    assert "unknown presenter" in capsys.readouterr().err


def test_enroll_refuses_a_bridge_url_it_cannot_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["enroll", "--bridge", "ftp://x", "--token", "t", "--state-dir", str(tmp_path)]) == 1
    assert "http(s)://" in capsys.readouterr().err


def test_agent_url() -> None:
    assert agent_url("https://b.example", "ep-1") == "wss://b.example/api/endpoints/ep-1/agent"
    assert agent_url("http://127.0.0.1:8787/", "ep-1") == "ws://127.0.0.1:8787/api/endpoints/ep-1/agent"
    assert agent_url("https://b.example/caisey", "e p") == "wss://b.example/caisey/api/endpoints/e%20p/agent"
