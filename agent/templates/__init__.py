"""The prompt in the user's language (DESIGN §13): templates per action, with translations.

A template is a JSON file ``{"id": …, "version": N, "strings": {"<locale>": {key: text}}}``;
``id`` is the action it is for (``remote_control``, ``reboot``) or ``default`` for any other
action. Shipped here in English, German, French, Spanish and Dutch; more are added by
dropping files into ``<agent state dir>/templates/``: a file with a shipped id adds (or
replaces) the locales it holds, under its own version. A text may use ``{requested_by}``,
``{action}``, ``{reason}``, ``{ticket_id}``, ``{time}``; nothing else is substituted.

``render`` picks the template of the prompt's action in the user's locale (``de-DE``, then
``de``, then English) and returns the exact lines a presenter shows. The technician's title
and message are shown as written (not translated). ``Rendered.text(kind)`` is the text one
presenter showed — what ``caisey.wire.DisplayEvidence.shown_text`` carries and
``shown_sha256`` hashes; the countdown is left out (it changes every second). Every text, the
template's own included, is neutralised (``caisey.text``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from caisey.text import neutralise
from caisey.wire import PromptCopy

log = logging.getLogger("caisey.agent.templates")

DEFAULT_TEMPLATE = "default"
FALLBACK_LOCALE = "en"
KEYS = (
    "window_title",
    "heading",
    "action",
    "requested_by",
    "why",
    "ticket",
    "time_left",
    "approve",
    "deny",
    "keys",
    "someone",
)
MAX_TEMPLATE_BYTES = 64 * 1024  # a template with five languages is about 4 KiB
_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True, slots=True)
class Template:
    id: str
    version: int
    locale: str
    strings: dict[str, str]


@dataclass(frozen=True, slots=True)
class Rendered:
    """A prompt as a presenter shows it. ``lines``: brand, heading, title, message, Why, ticket,
    action, requester — whichever apply, in that order."""

    template_id: str
    template_version: int
    locale: str
    window_title: str
    lines: tuple[str, ...]
    roles: tuple[str, ...]  # per line: brand, heading, title, message, why, ticket, action, requested_by
    approve: str
    deny: str
    keys: str
    time_left: str  # with ``{time}`` still in it

    def to_json(self) -> dict[str, Any]:
        """What the tk dialog (and an ``exec:`` program) receive of it."""
        return {
            "template_id": self.template_id,
            "template_version": self.template_version,
            "locale": self.locale,
            "window_title": self.window_title,
            "lines": [{"role": role, "text": text} for role, text in zip(self.roles, self.lines, strict=True)],
            "approve": self.approve,
            "deny": self.deny,
            "time_left": self.time_left,
        }

    def text(self, kind: str) -> str:
        """The exact text presenter ``kind`` (tk | terminal | exec) shows, for the hash."""
        if kind == "terminal":
            return "\n".join((f"=== {self.window_title} ===", *self.lines, self.keys))
        return "\n".join((self.window_title, *self.lines, f"[{self.deny}] [{self.approve}]"))


class Templates:
    """Every template known: (id, locale) → Template."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Template] = {}

    def add_document(self, document: Any, source: str) -> int:
        """Add a template file's locales; returns how many. A bad file is logged and skipped."""
        if not isinstance(document, dict):
            log.warning("template %s is not a JSON object; ignored", source)
            return 0
        template_id, version, strings = document.get("id"), document.get("version"), document.get("strings")
        if (
            not isinstance(template_id, str)
            or not _ID_RE.fullmatch(template_id)
            or isinstance(version, bool)
            or not isinstance(version, int)
            or not 0 <= version <= 1_000_000
            or not isinstance(strings, dict)
        ):
            log.warning("template %s needs id (letters, digits, . _ : -), version (integer) and strings", source)
            return 0
        added = 0
        for locale, texts in strings.items():
            if not isinstance(locale, str) or not isinstance(texts, dict):
                continue
            clean = {k: neutralise(v) for k, v in texts.items() if k in KEYS and isinstance(v, str)}
            missing = [k for k in KEYS if k not in clean]
            if missing:
                log.warning("template %s locale %s lacks %s; ignored", source, locale, ", ".join(missing))
                continue
            key = (template_id, locale.lower())
            self._by_key[key] = Template(template_id, version, locale, clean)
            added += 1
        return added

    def load_dir(self, directory: Path) -> int:
        """Add every ``*.json`` in ``directory`` (sorted by name; later files win)."""
        if not directory.is_dir():
            return 0
        added = 0
        for path in sorted(directory.glob("*.json")):
            try:
                if path.stat().st_size > MAX_TEMPLATE_BYTES:
                    log.warning("template %s is larger than %d bytes; ignored", path, MAX_TEMPLATE_BYTES)
                    continue
                added += self.add_document(json.loads(path.read_text(encoding="utf-8")), str(path))
            except (OSError, ValueError) as exc:
                log.warning("template %s cannot be read: %s", path, exc)
        return added

    def locales(self, template_id: str = DEFAULT_TEMPLATE) -> list[str]:
        return sorted(t.locale for (tid, _), t in self._by_key.items() if tid == template_id)

    def pick(self, action: str, locale: str | None) -> Template:
        """The action's template (else the default) in ``locale``, its language, or English."""
        wanted = []
        if locale:
            low = locale.lower()
            wanted.append(low)
            if "-" in low:
                wanted.append(low.split("-", 1)[0])
        wanted.append(FALLBACK_LOCALE)
        for template_id in (action, DEFAULT_TEMPLATE):
            for loc in wanted:
                found = self._by_key.get((template_id, loc))
                if found is not None:
                    return found
        raise LookupError(f"no template for {action!r} and no default English template")


def shipped() -> Templates:
    """The templates packaged with the agent."""
    templates = Templates()
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            templates.add_document(json.loads(entry.read_text(encoding="utf-8")), f"agent/templates/{entry.name}")
    return templates


def load(extra_dirs: Iterable[Path] = ()) -> Templates:
    """The shipped templates, then those dropped into ``extra_dirs``."""
    templates = shipped()
    for directory in extra_dirs:
        count = templates.load_dir(directory)
        if count:
            log.info("loaded %d template locale(s) from %s", count, directory)
    return templates


def _fill(text: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def render(prompt: PromptCopy, locale: str | None, templates: Templates | None = None) -> Rendered:
    """The prompt as shown in ``locale`` (see the module docstring)."""
    template = (templates or _default()).pick(prompt.action, locale)
    s = template.strings
    values = {
        "requested_by": neutralise(prompt.requested_by) or s["someone"],
        "action": neutralise(prompt.action),
        "reason": neutralise(prompt.reason or ""),
        "ticket_id": neutralise(prompt.ticket_id or ""),
    }
    lines: list[tuple[str, str]] = []
    if prompt.brand_name:
        lines.append(("brand", neutralise(prompt.brand_name)))
    lines.append(("heading", _fill(s["heading"], values)))
    lines.append(("title", neutralise(prompt.title)))
    if prompt.message:
        lines.append(("message", neutralise(prompt.message, multiline=True)))
    if prompt.reason:
        lines.append(("why", _fill(s["why"], values)))
    if prompt.ticket_id:
        ticket = _fill(s["ticket"], values)
        lines.append(("ticket", f"{ticket} ({neutralise(prompt.ticket_url)})" if prompt.ticket_url else ticket))
    lines.append(("action", _fill(s["action"], values)))
    if prompt.requested_by:
        lines.append(("requested_by", _fill(s["requested_by"], values)))
    return Rendered(
        template_id=template.id,
        template_version=template.version,
        locale=template.locale,
        window_title=s["window_title"],
        lines=tuple(text for _, text in lines),
        roles=tuple(role for role, _ in lines),
        approve=s["approve"],
        deny=s["deny"],
        keys=s["keys"],
        time_left=s["time_left"],
    )


_SHIPPED: Templates | None = None


def _default() -> Templates:
    global _SHIPPED
    if _SHIPPED is None:
        _SHIPPED = shipped()
    return _SHIPPED


__all__ = ["DEFAULT_TEMPLATE", "KEYS", "Rendered", "Template", "Templates", "load", "render", "shipped"]
