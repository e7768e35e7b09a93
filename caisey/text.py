"""Text a person reads: which characters a field may hold, and how to show one safely (issue 11).

Prompt texts and labels are written by a technician and read by an endpoint user — in a
terminal, a Tk dialog, an ``exec:`` program, ``caisey-agent status`` — and by other
technicians in the console. Control characters let a writer act on the reader's terminal:
ESC starts ANSI/OSC sequences that hide text (``ESC[8m`` hides the "requested by" line),
retitle the window or write the clipboard (OSC 52); CR overwrites a line; C1 controls
(U+0080–U+009F) are the same sequences in one code point (U+009B is CSI). A lone surrogate
is not Unicode text at all: it cannot be encoded to UTF-8, so it fails wherever the text is
stored, sent or printed.

One policy, two uses:

- ``check`` refuses such text at the API (``invalid_field``): C0 controls, DEL and C1
  controls anywhere, except newline and tab where a field allows line breaks (``message``).
- ``neutralise`` makes any text safe to print, for presenters and CLI output, which must not
  trust their input either (a malicious or older bridge can still send controls): every
  refused character becomes a visible escape (``\\x1b``), a lone surrogate becomes U+FFFD.

Standard library only (runs on Pyodide); no I/O.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls. Newline and tab are refused too unless a field allows them.
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f"
_REFUSED = re.compile(f"[{_CONTROLS}\t\n\ud800-\udfff]")
_REFUSED_MULTILINE = re.compile(f"[{_CONTROLS}\ud800-\udfff]")


def refused_char(text: str, *, multiline: bool = False) -> str | None:
    """The first character ``text`` may not hold, or None when it is fine.

    ``multiline`` allows newline and tab (a prompt's message); nothing else is ever allowed.
    """
    found = (_REFUSED_MULTILINE if multiline else _REFUSED).search(text)
    return found.group() if found else None


def describe(char: str) -> str:
    """``U+001B`` — how an error message names a refused character."""
    return f"U+{ord(char):04X}"


def check(text: str, name: str, *, multiline: bool = False) -> str | None:
    """None when ``text`` is acceptable, else a message naming the field and the character."""
    char = refused_char(text, multiline=multiline)
    if char is None:
        return None
    if "\ud800" <= char <= "\udfff":
        return f"{name} holds a lone surrogate ({describe(char)}), which is not Unicode text"
    allowed = " (newline and tab are allowed)" if multiline else ""
    return f"{name} holds the control character {describe(char)}; control characters are refused{allowed}"


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if "\ud800" <= char <= "\udfff":
        return "\ufffd"
    return f"\\x{ord(char):02x}"


def neutralise(text: str, *, multiline: bool = False) -> str:
    """``text`` with every character ``check`` refuses shown as a visible escape.

    For output to terminals, dialogs and logs: nothing in the result can start an escape
    sequence or move the cursor, and the result always encodes to UTF-8. With ``multiline``
    newlines stay and a tab becomes spaces; without, both are escaped as well.
    """
    if multiline:
        return _REFUSED_MULTILINE.sub(_escape, text).replace("\t", "    ")
    return _REFUSED.sub(_escape, text)
