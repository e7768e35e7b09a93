"""The approval window's tk side, for real (issue 16, DESIGN §13): a real agent process with
``--presenter tk`` on Xvfb against a real local bridge. The dialog offers the window asked for
and shorter ones; after the approval, the indicator ("Access granted … until 10:35") is on
screen, and a click on its Revoke button (xdotool) reaches the bridge as the user's signed
revocation, and the indicator goes away. Both windows are photographed to test-artifacts/.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from PIL import ImageGrab

from agent.tk_dialog import minutes_words, window_choices
from tests.agent_harness import Agent
from tests.bridge_hosts import LocalBridgeProcess
from tests.xvfb import click_approve, xdotool

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def test_the_dialog_offers_the_window_asked_and_only_shorter_ones() -> None:
    assert window_choices(30) == [30, 15, 5]
    assert window_choices(480) == [480, 240, 120, 60, 30, 15, 5]
    assert window_choices(3) == [3]
    assert [minutes_words(m) for m in (5, 60, 90, 480)] == ["5 min", "1 h", "1 h 30 min", "8 h"]


async def window_named(name: str, *, gone: bool = False) -> str:
    for _ in range(200):
        found = (await xdotool("search", "--name", name)).split()
        if found and not gone:
            return found[-1]
        if not found and gone:
            return ""
        await asyncio.sleep(0.05)
    raise AssertionError(f"window {name!r} {'stayed' if gone else 'never appeared'}")


async def geometry(window: str) -> tuple[int, int, int, int]:
    lines = (await xdotool("getwindowgeometry", "--shell", window)).split()
    g = dict(line.split("=", 1) for line in lines if "=" in line)
    return int(g["X"]), int(g["Y"]), int(g["WIDTH"]), int(g["HEIGHT"])


async def photograph(window: str, display: str, name: str) -> None:
    await asyncio.sleep(0.5)  # let it paint
    x, y, width, height = await geometry(window)
    shot = ImageGrab.grab(bbox=(x, y, x + width, y + height), xdisplay=display)
    ARTIFACTS.mkdir(exist_ok=True)
    shot.save(ARTIFACTS / name)
    assert len(shot.getcolors(1 << 16) or []) > 20, f"{name} is blank: the window did not paint"


async def state_of(bridge: LocalBridgeProcess, pid: str, want: str) -> dict[str, object]:
    view: dict[str, object] = {}
    for _ in range(150):
        r = await bridge.request("GET", f"/api/endpoints/desk-w/prompts/{pid}", token=bridge.admin_token)
        view = r.body
        window = view.get("window")
        if isinstance(window, dict) and window["state"] == want:
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"window never {want}: {view}")


async def test_the_indicators_revoke_button_reaches_the_bridge(tmp_path: Path, xdisplay: str) -> None:
    bridge = LocalBridgeProcess(tmp_path / "data", heartbeat_ms=2_000)
    agent = Agent(tmp_path, presenter="tk", display=xdisplay)
    try:
        bridge.start()
        r = await bridge.request(
            "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": "desk-w", "label": "Desk"}
        )
        await agent.enroll(bridge.url, r.body["enrollment_token"])
        await agent.start()
        created = await bridge.request(
            "POST",
            "/api/endpoints/desk-w/prompts",
            token=bridge.admin_token,
            body={
                "title": "Allow remote control?",
                "message": "Alice from the help desk would like to work on this computer for a while.",
                "action": "remote_control",
                "expires_in": 300,
                "grant_minutes": 30,
            },
        )
        assert created.status == 201, created.body
        pid = str(created.body["prompt_id"])
        dialog = await window_named("approval requested")
        await photograph(dialog, xdisplay, "tk-dialog-window.png")
        await click_approve(dialog)
        view = await state_of(bridge, pid, "active")
        assert view["state"] == "approved"
        indicator = await window_named("access granted")
        await photograph(indicator, xdisplay, "tk-indicator.png")
        _, _, width, height = await geometry(indicator)
        # Revoke is the bottom-right button (agent/tk_indicator.py: padx 12, pady 8).
        await xdotool("mousemove", "--window", indicator, str(width - 57), str(height - 24), "click", "1")
        view = await state_of(bridge, pid, "revoked")
        window = view["window"]
        assert isinstance(window, dict) and window["revoked_by_user"] is True, (window, agent.log_text()[-2000:])
        await window_named("access granted", gone=True)
    finally:
        await agent.stop()
        bridge.kill()
