"""The tk dialog in the user's language (issue 16), on Xvfb.

- The dialog itself in German and French with the technician's reason ("Why: …"), the ticket
  and the MSP's branding (name and logo): photographed (``test-artifacts/tk-dialog-de.png``,
  ``-fr.png``; copied to ``docs/`` when missing or with ``CAISEY_UPDATE_SCREENSHOT=1``), then
  answered with the keyboard.
- A real agent process with ``LANG=es_ES.UTF-8`` and ``--presenter tk`` against a real local
  bridge: the click on the Spanish "Permitir" reaches the bridge as an approval, with the
  evidence that it was shown by tk in Spanish, and the exact Spanish text it showed.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageGrab

from agent.presenters import Showing, TkPresenter
from agent.templates import render
from tests.agent_harness import make_prompt
from tests.bridge_hosts import LocalBridgeProcess
from tests.xvfb import click_approve, dialog_window, xdotool

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
DOCS = ROOT / "docs"


def logo_png() -> str:
    """A small PNG logo, base64 (what a client's ``brand_logo_png`` holds)."""
    image = Image.new("RGB", (40, 40), "#1d4ed8")
    ImageDraw.Draw(image).rectangle((10, 10, 29, 29), fill="#facc15")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


async def geometry(window: str) -> tuple[int, int, int, int]:
    lines = (await xdotool("getwindowgeometry", "--shell", window)).split()
    values = dict(line.split("=", 1) for line in lines if "=" in line)
    return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])


async def photograph(window: str, xdisplay: str, name: str, *, publish: bool = False) -> Image.Image:
    await asyncio.sleep(0.6)  # let the dialog paint
    x, y, width, height = await geometry(window)
    shot = ImageGrab.grab(bbox=(x, y, x + width, y + height), xdisplay=xdisplay)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    shot.save(path)
    if publish and (not (DOCS / path.name).exists() or os.environ.get("CAISEY_UPDATE_SCREENSHOT") == "1"):
        shutil.copyfile(path, DOCS / path.name)
    colours = shot.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 20, "the screenshot is blank: the dialog did not paint"
    return shot


@pytest.mark.parametrize(("locale", "key", "outcome"), [("de", "d", "deny"), ("fr", "a", "approve")])
async def test_the_dialog_in_two_languages_with_reason_ticket_and_branding(
    xdisplay: str, locale: str, key: str, outcome: str
) -> None:
    prompt = dataclasses.replace(
        make_prompt(expires_at_ms=int(time.time() * 1000) + 300_000, title="Drucker neu einrichten"),
        message="Sam from the help desk will reinstall the printer driver.",
        reason="Ticket #4711: the printer in room 2.14 prints blank pages",
        ticket_id="HD-4711",
        brand_name="Acme IT Services",
        brand_logo_png=logo_png(),
    )
    rendered = render(prompt, locale)
    show = Showing(prompt, prompt.expires_at_ms, rendered)
    shown: list[int] = []
    task = asyncio.get_running_loop().create_task(TkPresenter().present(show, lambda: shown.append(1)))
    window = await dialog_window()
    title = (await xdotool("getwindowname", window)).strip()
    assert title == f"Caisey — {rendered.window_title}: Drucker neu einrichten"
    await photograph(window, xdisplay, f"tk-dialog-{locale}", publish=True)
    why = {"de": "Grund: ", "fr": "Motif : "}[locale]
    assert why + prompt.reason in rendered.lines and rendered.lines[0] == "Acme IT Services"
    await xdotool("windowfocus", "--sync", window, "key", key)
    assert await asyncio.wait_for(task, 10) == outcome
    assert shown == [1]


async def test_a_real_agent_shows_the_dialog_in_spanish_and_reports_it(tmp_path: Path, xdisplay: str) -> None:
    from tests.agent_harness import Agent

    bridge = LocalBridgeProcess(tmp_path / "data", heartbeat_ms=2_000)
    agent = Agent(tmp_path, presenter="tk", display=xdisplay, env={"LANG": "es_ES.UTF-8"})
    try:
        bridge.start()
        r = await bridge.request("POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": "mesa-1"})
        await agent.enroll(bridge.url, r.body["enrollment_token"])
        await agent.start()
        created = await bridge.request(
            "POST",
            "/api/endpoints/mesa-1/prompts",
            token=bridge.admin_token,
            body={"title": "¿Permitir el control remoto?", "message": "Ana, del soporte", "action": "remote_control"},
        )
        assert created.status == 201
        window = await dialog_window()
        await photograph(window, xdisplay, "tk-dialog-es-agent")
        await click_approve(window)
        pid = created.body["prompt_id"]
        view: dict[str, object] = {}
        for _ in range(100):
            view = (await bridge.request("GET", f"/api/endpoints/mesa-1/prompts/{pid}", token=bridge.admin_token)).body
            if view["state"] == "approved":
                break
            await asyncio.sleep(0.1)
        assert view["state"] == "approved", (view, agent.log_text()[-2000:])
        display = view["display"]
        assert isinstance(display, dict)
        assert (display["presenter"], display["locale"], display["outcome"]) == ("tk", "es", "shown")
        assert display["shown_text"].endswith("[Rechazar] [Permitir]")
        assert "¿Permitir el control remoto?" in display["shown_text"]
        assert view["outcome"] == "user" and view["decision_signature"] is not None
    finally:
        await agent.stop()
        bridge.kill()
