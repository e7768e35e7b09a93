"""What only the Cloudflare host shows, on the Workers stand-in: sockets held by the runtime,
hibernation, alarms across a restart, static assets, SQL conversions. The shared behaviour
(DESIGN §4–§8) is ``test_bridge_behaviour.py``, which runs against this host too."""

from __future__ import annotations

import json
from typing import Any

import pytest

from caisey import wire
from tests.bridge_hosts import ScriptedRuntime, enroll, of_type
from tests.workers_host import ADMIN_TOKEN, WorkersBridge
from tests.workers_standin.harness import AgentClient, Harness, HttpResponse, sha256_hex

# isort: split
# Importable once the harness has put the stand-in first on sys.path.
import _standin_runtime as rt


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"}


async def create(bridge: WorkersBridge, endpoint_id: str, **fields: Any) -> dict[str, Any]:
    body = {"title": "Allow remote control?", "action": "remote_control", "expires_in": 120, **fields}
    r = await bridge.request("POST", f"/api/endpoints/{endpoint_id}/prompts", token=ADMIN_TOKEN, body=body)
    assert r.status == 201, r.body
    return dict(r.body)


async def fleet_line(bridge: WorkersBridge, endpoint_id: str) -> dict[str, Any]:
    r = await bridge.request("GET", "/api/endpoints", token=ADMIN_TOKEN)
    [line] = [e for e in r.body["endpoints"] if e["endpoint_id"] == endpoint_id]
    return dict(line)


def test_the_main_module_exports_exactly_the_bound_classes() -> None:
    module = Harness().module
    assert module.__name__ == "entry"  # uploaded as entry.py, imported as `entry`
    assert sorted(module.__all__) == ["Default", "EndpointBridgeObject", "FleetIndexObject"]


# --- the SqlStore adapter ----------------------------------------------------------------------------


def durable_sql() -> Any:
    module = Harness().module
    record = type("Record", (), {"db": rt.SqliteDatabase(), "alarm_ms": None})()
    return module.DurableSql(rt.DurableObjectStorage(record))


def test_rows_are_plain_dicts_with_none_for_null() -> None:
    store = durable_sql()
    store.execute("CREATE TABLE t (a INTEGER, b TEXT)")
    store.execute("INSERT INTO t VALUES (?, ?)", (7, None))
    assert store.execute("SELECT a, b FROM t") == [{"a": 7, "b": None}]


def test_bools_are_bound_as_integers_never_as_text() -> None:
    store = durable_sql()
    store.execute("CREATE TABLE t (v)")
    store.execute("INSERT INTO t VALUES (?)", (True,))
    assert store.execute("SELECT v, typeof(v) AS t FROM t") == [{"v": 1, "t": "real"}]


def test_unbindable_values_fail_loudly_before_reaching_the_runtime() -> None:
    store = durable_sql()
    with pytest.raises(ValueError, match="2\\*\\*53"):
        store.execute("SELECT ?", (2**60,))
    with pytest.raises(TypeError, match="serialise"):
        store.execute("SELECT ?", ({"a": 1},))


def test_transaction_rolls_back_and_propagates() -> None:
    store = durable_sql()
    store.execute("CREATE TABLE t (v INTEGER)")

    def failing() -> None:
        store.execute("INSERT INTO t VALUES (1)")
        raise KeyError("boom")

    with pytest.raises(KeyError):
        store.transaction(failing)
    assert store.transaction(lambda: store.execute("SELECT COUNT(*) AS n FROM t")) == [{"n": 0}]


# --- agent sockets -------------------------------------------------------------------------------------


async def test_agent_socket_refusals() -> None:
    bridge = WorkersBridge()
    ep = await enroll(bridge, "lap-refuse")
    assert (await bridge.connect_agent("lap-refuse", "csa_wrong")).status == 401  # type: ignore[union-attr]
    assert (await bridge.connect_agent("lap-refuse", None)).status == 401  # type: ignore[union-attr]
    assert (await bridge.connect_agent("never-registered", ep.secret)).status == 404  # type: ignore[union-attr]
    plain = await bridge.request("GET", "/api/endpoints/lap-refuse/agent", token=ep.secret)
    assert plain.status == 426 and plain.body["error"]["code"] == "upgrade_required"


async def test_a_newer_connection_replaces_the_older_one() -> None:
    bridge = WorkersBridge()
    ep = await enroll(bridge, "lap-twice")
    first = ScriptedRuntime(bridge, ep)
    await first.connect()
    second = ScriptedRuntime(bridge, ep)
    await second.connect()
    assert first.socket is not None and first.socket.closed
    assert first.socket.close_code == 4000  # type: ignore[attr-defined]
    assert second.socket is not None and not second.socket.closed
    assert (await fleet_line(bridge, "lap-twice"))["online"] is True
    pid = (await create(bridge, "lap-twice"))["prompt_id"]
    assert [d.prompt.prompt_id for d in of_type(await second.drain(), wire.PromptDeliver)] == [pid]
    await second.close()
    assert (await fleet_line(bridge, "lap-twice"))["online"] is False


async def test_a_silent_agent_is_closed_by_the_liveness_alarm() -> None:
    bridge = WorkersBridge(heartbeat_ms=2_000)
    ep = await enroll(bridge, "lap-silent")
    runtime = ScriptedRuntime(bridge, ep)
    await runtime.connect()
    assert (await fleet_line(bridge, "lap-silent"))["online"] is True
    await bridge.advance(6_500)  # three heartbeats missed
    assert runtime.socket is not None and runtime.socket.closed
    assert runtime.socket.close_code == 4408  # type: ignore[attr-defined]
    assert (await fleet_line(bridge, "lap-silent"))["online"] is False


async def test_a_binary_frame_gets_an_error_frame_and_the_socket_stays_up() -> None:
    bridge = WorkersBridge()
    ep = await enroll(bridge, "lap-binary")
    runtime = ScriptedRuntime(bridge, ep)
    await runtime.connect()
    assert isinstance(runtime.socket, AgentClient)
    await runtime.socket.send(b"\x00\x01 not json")
    assert of_type(await runtime.drain(), wire.Error)
    assert not runtime.socket.closed


async def test_agent_drop_without_close_frame_marks_the_endpoint_offline() -> None:
    bridge = WorkersBridge()
    ep = await enroll(bridge, "lap-drop")
    runtime = ScriptedRuntime(bridge, ep)
    await runtime.connect()
    assert isinstance(runtime.socket, AgentClient)
    await runtime.socket.drop()
    assert (await fleet_line(bridge, "lap-drop"))["online"] is False


# --- hibernation and restarts ------------------------------------------------------------------------------


async def scenario(bridge: WorkersBridge) -> list[tuple[str, str]]:
    ep = await enroll(bridge, "lap-modes")
    a = (await create(bridge, "lap-modes"))["prompt_id"]
    b = (await create(bridge, "lap-modes", expires_in=10))["prompt_id"]
    runtime = ScriptedRuntime(bridge, ep)
    delivers = of_type(await runtime.connect(), wire.PromptDeliver)
    for deliver in delivers:
        await runtime.receipt(deliver)
    await runtime.decide(a, "approve")
    await runtime.close()
    await bridge.advance(11_000)
    r = await bridge.request("GET", "/api/endpoints/lap-modes/prompts", token=ADMIN_TOKEN)
    states = {p["prompt_id"]: p["state"] for p in r.body["prompts"]}
    return [("a", states[a]), ("b", states[b])]


@pytest.mark.parametrize(("hibernation", "seed"), [("never", 0), ("always", 0), ("random", 1), ("random", 2)])
async def test_the_outcome_does_not_depend_on_when_instances_are_rebuilt(hibernation: str, seed: int) -> None:
    assert await scenario(WorkersBridge(hibernation=hibernation, seed=seed)) == [("a", "approved"), ("b", "expired")]


async def test_an_alarm_due_across_a_restart_fires_and_updates_the_fleet() -> None:
    bridge = WorkersBridge()
    await enroll(bridge, "lap-restart")
    pid = (await create(bridge, "lap-restart", expires_in=5))["prompt_id"]
    bridge.harness.restart()
    await bridge.advance(5_500)
    line = await fleet_line(bridge, "lap-restart")
    assert line["open_prompts"] == 0 and line["last_outcome"]["prompt_id"] == pid
    assert line["last_outcome"]["state"] == "failed_to_deliver"


async def test_a_restart_drops_the_agent_socket_and_reconnect_flushes() -> None:
    bridge = WorkersBridge()
    ep = await enroll(bridge, "lap-reset")
    runtime = ScriptedRuntime(bridge, ep)
    await runtime.connect()
    bridge.harness.restart()
    assert runtime.socket is not None and runtime.socket.closed
    pid = (await create(bridge, "lap-reset"))["prompt_id"]
    again = ScriptedRuntime(bridge, ep)
    assert [d.prompt.prompt_id for d in of_type(await again.connect(), wire.PromptDeliver)] == [pid]


# --- HTTP edges ----------------------------------------------------------------------------------------------


async def test_static_assets_are_served_and_misses_reach_the_worker() -> None:
    h = WorkersBridge().harness
    index = await h.fetch("GET", "/")
    assert index.status == 200 and index.headers["content-type"].startswith("text/html")
    assert (await h.fetch("GET", "/no/such/page")).status == 404
    api_miss = await h.fetch("GET", "/api/nope", headers=auth())
    assert api_miss.status == 404 and api_miss.json()["error"]["code"] == "not_found"


async def test_an_oversized_body_is_refused_before_it_is_read() -> None:
    h = WorkersBridge().harness
    r = await h.fetch("POST", "/api/tokens", headers={**auth(), "content-length": str(65 * 1024)}, body=b"{}")
    assert r.status == 413


async def test_without_the_admin_secret_no_admin_call_succeeds() -> None:
    h = Harness(secrets={})
    r = await h.fetch("POST", "/api/tokens", headers=auth(), body=json.dumps({"name": "t1"}))
    assert r.status == 401


async def test_admin_secret_tolerates_case_and_a_trailing_newline() -> None:
    h = Harness(secrets={"ADMIN_TOKEN_SHA256": sha256_hex(ADMIN_TOKEN).upper() + "\n"})
    r = await h.fetch("POST", "/api/tokens", headers=auth(), body=json.dumps({"name": "t1", "role": "technician"}))
    assert isinstance(r, HttpResponse) and r.status == 201 and r.json()["token"].startswith("cst_")


async def test_enrolling_with_a_token_for_an_unregistered_endpoint_is_401_as_on_the_local_host() -> None:
    bridge = WorkersBridge()
    token = "cse_ghost~" + "A" * 32
    r = await bridge.request("POST", "/api/agent/enroll", body={"enrollment_token": token})
    assert r.status == 401 and r.body["error"]["code"] == "invalid_enrollment_token"
