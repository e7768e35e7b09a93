"""``caisey-audit verify``: check an endpoint's audit export offline (DESIGN §10).

    caisey-audit verify [--head HASH] [--json] FILE      (FILE may be - for stdin)

The export is what ``GET /api/endpoints/{eid}/audit`` returns (JSON Lines, ``caisey.audit``).
``caisey.audit.verify_export`` checks every link of the hash chain and every signed answer
against the key the chain says was valid when it was committed; this command only reads the
file, verifies signatures with ``cryptography`` (``worker.ed25519_local``) and prints the
report: the endpoint, its key history, a verdict per prompt, every problem as ``line N:
what``, and one last line, ``OK: …`` or ``FAILED: …``.

``--head HASH``: an auditor who recorded the head earlier (``GET /api/endpoints/{eid}``
shows it as ``audit_head``) also fails the export unless it ends at that hash — nothing was
rewritten, added or removed since.

Exit status: 0 when the export verifies, 1 when anything is wrong, 2 when the command is
misused or the file cannot be read. Everything printed that comes from the file has its
control and format characters escaped and is cut to ``MAX_SHOWN_CHARS``: a hostile export
must not drive the terminal nor flood it.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from typing import IO, Any

from caisey.audit import AuditReport, verify_export
from caisey.clock import to_rfc3339
from worker.ed25519_local import verify

# A value from the file is shown at most this long: ids and hashes are far shorter, and a
# hostile export can put megabytes in a field. A problem or verdict (our sentence quoting a
# few ids and hashes from the file) at most ``MAX_MESSAGE_CHARS``.
MAX_SHOWN_CHARS = 200
MAX_MESSAGE_CHARS = 600
# Characters that move the cursor, recolour, reorder or hide text when printed: C0/C1
# controls, format characters (bidi overrides, zero-width), line and paragraph separators.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def shown(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """``value`` as text safe to print: unsafe characters escaped, cut to ``limit``."""
    text = str(value)
    cut = len(text) > limit
    out = "".join(
        ch if unicodedata.category(ch) not in UNSAFE_CATEGORIES else ch.encode("unicode_escape").decode("ascii")
        for ch in text[:limit]
    )
    return out + "…" if cut else out


class _Lines:
    """The file's lines, counted: where the head line was, for ``--head``."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = lines
        self.last_line = 0  # the last non-blank line (the head, in an export that has one)
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            self.count += 1
            if line.strip():
                self.last_line = self.count
            yield line


def check(lines: Iterable[str], expected_head: str | None = None) -> AuditReport:
    """``verify_export`` with Ed25519 verification, plus the ``--head`` comparison."""
    counted = _Lines(lines)
    report = verify_export(counted, verify)
    if expected_head is not None and report.head != expected_head:
        if report.head is None:
            report.problems.append((counted.count + 1, f"no head to compare with the recorded head {expected_head}"))
        else:
            report.problems.append(
                (
                    counted.last_line,
                    f"the chain ends at {report.head}, not at the recorded head {expected_head}: "
                    "its history differs from the one recorded",
                )
            )
    return report


def _time(ms: int | None) -> str:
    return to_rfc3339(ms) if ms is not None else "now"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def verdict(report: AuditReport) -> str:
    bad_prompts = [p for p in report.prompts if not p.ok]
    if report.ok:
        signed = sum(1 for p in report.prompts if p.signed_by is not None)
        return (
            f"OK: {_count(report.facts, 'fact')} chain to head {shown(report.head)}; "
            f"{_count(len(report.prompts), 'prompt')}, {_count(signed, 'decision')} signed by the endpoint"
        )
    parts = []
    if report.problems:
        line, what = min(report.problems, key=lambda problem: problem[0])
        parts.append(
            f"{_count(len(report.problems), 'problem')}, the first at line {line}: {shown(what, MAX_MESSAGE_CHARS)}"
        )
    if bad_prompts:
        parts.append(f"{_count(len(bad_prompts), 'prompt')} whose decision is not proven")
    return "FAILED: " + "; ".join(parts)


def render_text(report: AuditReport) -> list[str]:
    out = [
        f"endpoint  {shown(report.endpoint_id or '(no header)')}",
        f"facts     {report.facts}",
        f"head      {shown(report.head or '(none)')}",
    ]
    if not report.keys:
        out.append("keys      none (answers unsigned)")
    for i, key in enumerate(report.keys):
        label = "keys" if i == 0 else ""
        out.append(f"{label:<10}{key.key_id}  valid {_time(key.valid_from_ms)} until {_time(key.valid_until_ms)}")
    if report.removed_at_ms is not None:
        out.append(f"removed   {_time(report.removed_at_ms)}")
    out.append(f"prompts   {len(report.prompts)}")
    for prompt in report.prompts:
        out.append(
            f"  {'ok ' if prompt.ok else 'BAD'} {shown(prompt.prompt_id)}  {shown(prompt.verdict, MAX_MESSAGE_CHARS)}"
        )
        if prompt.shown is not None:  # the signed evidence of display (DESIGN §13)
            out.append(f"      {shown(prompt.shown, MAX_MESSAGE_CHARS)}")
    for line, what in sorted(report.problems, key=lambda problem: problem[0]):
        out.append(f"line {line}: {shown(what, MAX_MESSAGE_CHARS)}")
    out.append(verdict(report))
    return out


def render_json(report: AuditReport) -> dict[str, Any]:
    """Machine-readable; ``json.dumps`` escapes every control character (ASCII only)."""
    return {
        "ok": report.ok,
        "endpoint_id": report.endpoint_id,
        "facts": report.facts,
        "head": report.head,
        "keys": [
            {
                "key_id": key.key_id,
                "valid_from": _time(key.valid_from_ms),
                "valid_until": to_rfc3339(key.valid_until_ms) if key.valid_until_ms is not None else None,
            }
            for key in report.keys
        ],
        "prompts": [
            {
                "prompt_id": p.prompt_id,
                "state": p.state,
                "decision": p.decision,
                "signed_by": p.signed_by,
                "verdict": p.verdict,
                "windows": p.windows,  # the approval window's facts (DESIGN §13)
                "ok": p.ok,
                "outcome": p.outcome,
                "shown": p.shown,
            }
            for p in report.prompts
        ],
        "problems": [{"line": line, "what": what} for line, what in sorted(report.problems, key=lambda p: p[0])],
        "verdict": verdict(report),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caisey-audit", description="Check an endpoint's audit export offline.")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("verify", help="check every link, every signed answer, and give a verdict per prompt")
    cmd.add_argument("file", help="the export (GET /api/endpoints/{eid}/audit), or - for stdin")
    cmd.add_argument("--head", metavar="HASH", help="also fail unless the chain ends at this recorded head")
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _open(name: str) -> IO[str]:
    # Lines end at \n only (as the export writes them), so line numbers match `sed -n Np`;
    # bytes that are not UTF-8 become U+FFFD and fail that line's check, not the command.
    if name == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="\n")
    return open(name, encoding="utf-8", errors="replace", newline="\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        source = _open(args.file)
    except OSError as exc:
        sys.stderr.write(f"caisey-audit: cannot read {shown(args.file)}: {shown(exc.strerror or exc)}\n")
        return EXIT_USAGE
    try:
        with source:
            report = check(source, args.head)
    except OSError as exc:  # e.g. a directory, or a read error mid-file
        sys.stderr.write(f"caisey-audit: cannot read {shown(args.file)}: {shown(exc.strerror or exc)}\n")
        return EXIT_USAGE
    if args.json:
        sys.stdout.write(json.dumps(render_json(report), indent=1, ensure_ascii=True) + "\n")
    else:
        sys.stdout.write("\n".join(render_text(report)) + "\n")
    return EXIT_OK if report.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
