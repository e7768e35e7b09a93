"""``caisey-agent`` commands that need no bridge: status, argument checks, the run lock."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from agent.cli import MAX_ENROLL_RESPONSE_BYTES, CliError, _exchange_token, _run_lock, main
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


async def test_enroll_reads_a_gzip_chunked_answer_that_arrives_in_pieces() -> None:
    """workerd and Cloudflare's edge answer gzip-compressed and chunked, in several writes
    (docs/WORKERS_RUNTIME.md "Observed later"): the answer must be read to its end."""
    body = gzip.compress(json.dumps({"endpoint_id": "laptop-1", "agent_secret": "cas_" + "s" * 40}).encode())
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        for piece in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        got = await _exchange_token(f"http://127.0.0.1:{port}", "cse_laptop-1~x", "pk")
    assert got == ("laptop-1", "cas_" + "s" * 40)


async def test_enroll_refuses_an_answer_larger_than_its_bound() -> None:
    big = json.dumps({"endpoint_id": "laptop-1", "agent_secret": "x" * MAX_ENROLL_RESPONSE_BYTES}).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(big), 4096):
            piece = big[i : i + 4096]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(CliError, match="not a JSON object"):
            await _exchange_token(f"http://127.0.0.1:{port}", "cse_laptop-1~x", "pk")
