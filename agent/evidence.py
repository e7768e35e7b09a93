"""The evidence of display the agent reports with an answer (DESIGN §13).

``DisplayContext`` is what the runner (``agent.connection``) needs to show a prompt the
way it will be able to prove: the session probe (``agent.display``), the user's locale, the
templates (``agent.templates``). Before showing, ``gate`` says whether to show now, wait for
the screen to unlock, or apply the no-user rule (nobody logged in, or a locked screen whose
prompt says ``on_locked: no_user``); after, ``shown`` / ``unshown`` build the
``caisey.wire.DisplayEvidence`` the core signs with the decision. Everything is injectable:
tests pass a fake probe (a locked session, nobody logged in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.display import SessionState, detect_locale, probe_session
from agent.templates import Rendered, Templates, load, render
from caisey.wire import MAX_NAME_CHARS, DisplayEvidence, PromptCopy, shown_text_sha256

Gate = Literal["show", "wait_unlock", "locked", "no_user"]


@dataclass(frozen=True, slots=True)
class Before:
    """The probe's answer before a prompt is shown, and what to do about it."""

    gate: Gate
    state: SessionState


class DisplayContext:
    def __init__(
        self,
        *,
        probe: Callable[[], SessionState] = probe_session,
        locale: Callable[[], str | None] = detect_locale,
        templates: Templates | None = None,
        template_dirs: Iterable[Path] = (),
        locked_rule: str = "wait",
    ) -> None:
        self.probe = probe
        # The endpoint's rule for a locked screen when the prompt carries none (``--locked``).
        self.locked_rule = locked_rule
        self.locale = locale
        self.templates = templates if templates is not None else load(template_dirs)

    def gate(self, prompt: PromptCopy) -> Before:
        """Whether to show ``prompt`` now (blocking: run it in a thread)."""
        state = self.probe()
        if state.logged_in is False:
            return Before("no_user", state)
        if state.locked:
            rule = prompt.on_locked or self.locked_rule
            return Before("locked" if rule == "no_user" else "wait_unlock", state)
        return Before("show", state)

    def render(self, prompt: PromptCopy) -> Rendered:
        return render(prompt, self.locale(), self.templates)


def _user(state: SessionState) -> str | None:
    return state.user[:MAX_NAME_CHARS] if state.user else None


def shown(state: SessionState, presenter: str, shown_at_ms: int | None, rendered: Rendered) -> DisplayEvidence:
    """A prompt ``presenter`` showed at ``shown_at_ms`` (local clock) with ``rendered``'s text."""
    text = rendered.text(presenter)
    return DisplayEvidence(
        outcome="shown",
        session=state.session,
        locked=False,
        presenter=presenter,
        user=_user(state),
        shown_at_ms=shown_at_ms,
        locale=rendered.locale,
        template_id=rendered.template_id,
        template_version=rendered.template_version,
        shown_text=text,
        shown_sha256=shown_text_sha256(rendered.locale, rendered.template_id, rendered.template_version, text),
    )


def unshown(state: SessionState, outcome: Literal["locked", "no_user"]) -> DisplayEvidence:
    """Nobody could be shown the prompt: the screen was locked, or nobody was there."""
    return DisplayEvidence(
        outcome=outcome,
        session=state.session,
        locked=state.locked,
        presenter="none",
        user=_user(state) if state.logged_in is not False else None,
    )


__all__ = ["Before", "DisplayContext", "shown", "unshown"]
