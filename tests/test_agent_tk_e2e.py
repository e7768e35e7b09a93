"""The real tk dialog end to end: a real agent process with ``--presenter tk`` on Xvfb, against
a real local bridge. The window is photographed (``test-artifacts/tk-dialog.png``) and a click
on Approve (xdotool) must reach the bridge as an approval."""

from __future__ import annotations

import asyncio
from pathlib import Path

from PIL import ImageGrab

from tests.agent_harness import Agent
from tests.bridge_hosts import LocalBridgeProcess
from tests.xvfb import click_approve, dialog_window, xdotool

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


async def test_tk_dialog_click_approve_reaches_the_bridge(tmp_path: Path, xdisplay: str) -> None:
    bridge = LocalBridgeProcess(tmp_path / "data", heartbeat_ms=2_000)
    agent = Agent(tmp_path, presenter="tk", display=xdisplay)
    try:
        bridge.start()
        r = await bridge.request(
            "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": "desk-1", "label": "Desk"}
        )
        await agent.enroll(bridge.url, r.body["enrollment_token"])
        await agent.start()
        created = await bridge.request(
            "POST",
            "/api/endpoints/desk-1/prompts",
            token=bridge.admin_token,
            body={
                "title": "Allow remote control?",
                "message": "Alice from the help desk would like to view and control this computer.",
                "action": "remote_control",
                "expires_in": 300,
            },
        )
        assert created.status == 201
        window = await dialog_window()
        await asyncio.sleep(0.5)  # let the dialog paint before the photograph
        ARTIFACTS.mkdir(exist_ok=True)
        x, y, width, height = await _geometry(window)
        shot = ImageGrab.grab(bbox=(x, y, x + width, y + height), xdisplay=xdisplay)
        shot.save(ARTIFACTS / "tk-dialog.png")
        assert len(set(shot.getdata())) > 20, "the screenshot is blank: the dialog did not paint"
        await click_approve(window)
        pid = created.body["prompt_id"]
        view = None
        for _ in range(100):
            view = (await bridge.request("GET", f"/api/endpoints/desk-1/prompts/{pid}", token=bridge.admin_token)).body
            if view["state"] == "approved":
                break
            await asyncio.sleep(0.1)
        assert view is not None and view["state"] == "approved", (view, agent.log_text()[-2000:])
        runtime_events = [e["type"] for e in view["events"] if e["source"] == "runtime"]
        assert runtime_events == ["received", "acknowledged", "decided"]
    finally:
        await agent.stop()
        bridge.kill()


async def _geometry(window: str) -> tuple[int, int, int, int]:
    lines = (await xdotool("getwindowgeometry", "--shell", window)).split()
    geometry = dict(line.split("=", 1) for line in lines if "=" in line)
    return int(geometry["X"]), int(geometry["Y"]), int(geometry["WIDTH"]), int(geometry["HEIGHT"])
