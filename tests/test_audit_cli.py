"""``caisey-audit verify`` (``worker/audit_cli.py``) on real exports (DESIGN §10, issue 10).

The exports come from a real ``EndpointBridge`` on SQLite, in-process with explicit time:
the endpoint enrolls with a real Ed25519 key (``agent.identity.EndpointKey``) through
``POST /api/agent/enroll``, its answers are signed exactly as ``agent.core`` signs them,
checked by the host's crypto (``worker.ed25519_local``) before the actor commits them, and
the export is ``GET /api/endpoints/{eid}/audit``. Each tamper is one an attacker holding the
file could make; each must fail with exit status 1, naming the line that was touched.
The export of a real-process chaos run is checked in ``tests/chaos.py``.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.identity import EndpointKey
from caisey import wire
from caisey.audit import link
from caisey.ids import IdSource
from caisey.signing import answer_message, b64encode
from worker.api import ROLE_HEADER, TECHNICIAN_HEADER, ApiRequest
from worker.audit_cli import MAX_SHOWN_CHARS, main
from worker.ed25519_local import verified
from worker.endpoint import EndpointBridge
from worker.host import Entropy
from worker.sqlite_store import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = "ep-audit"
TECH = {TECHNICIAN_HEADER: "tech", ROLE_HEADER: "technician"}
ADMIN = {TECHNICIAN_HEADER: "root", ROLE_HEADER: "admin"}


def audit_command() -> list[str]:
    """The installed console script (``pip install -e .``), else the module."""
    script = Path(sys.executable).parent / "caisey-audit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "worker.audit_cli"]


class Endpoint:
    """One endpoint's actor in-process, enrolled with a real key; time moves by a second a step."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000
        self.actor = EndpointBridge(SqliteStore(":memory:"), Entropy(random.Random(7)))
        self.ids = IdSource(random.Random(8).getrandbits)
        self.copies: dict[str, wire.PromptCopy] = {}
        self.sent: list[str] = []

    def tick(self) -> int:
        self.now += 1_000
        return self.now

    def api(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        raw = json.dumps(body).encode() if body is not None else b""
        req = ApiRequest(method, path, {**(headers or TECH), "x-caisey-endpoint": ENDPOINT}, raw)
        response, effects = self.actor.handle(req, self.tick(), True)
        self.sent.extend(effects.send)
        assert response.status in (200, 201), (path, response.status, response.body)
        return response.text if response.text is not None else response.body

    def enroll(self, key: EndpointKey, headers: dict[str, str] | None = None) -> None:
        """An enrollment (a re-enrollment needs admin headers), its exchange with ``key``, and a hello."""
        token = self.api("POST", "/api/enrollments", {"endpoint_id": ENDPOINT, "label": "audit"}, headers)
        answer = self.api(
            "POST",
            "/api/agent/enroll",
            {"enrollment_token": token["enrollment_token"], "public_key": key.public_key_b64},
        )
        assert answer["key_id"] == key.key_id
        self.actor.agent_opened(self.tick())
        self.frame(wire.Hello(self.ids.new(self.now), ENDPOINT, "test", self.now))

    def frame(self, message: wire.Message) -> list[str]:
        """One frame from the agent, its signatures checked by the host's crypto first."""
        raw = wire.encode(message)
        claims = verified(self.actor.signature_claims(raw))
        effects = self.actor.agent_frame(raw, self.tick(), claims)
        self.sent.extend(effects.send)
        return effects.send

    def delivered(self) -> str:
        """Create a prompt, take its delivery, send the receipt: its id."""
        created = self.api(
            "POST", f"/api/endpoints/{ENDPOINT}/prompts", {"title": "Allow?", "action": "remote_control"}
        )
        prompt_id = str(created["prompt_id"])
        delivers = [wire.decode(s) for s in self.sent if '"prompt.deliver"' in s]
        (deliver,) = [d for d in delivers if isinstance(d, wire.PromptDeliver) and d.prompt.prompt_id == prompt_id]
        self.copies[prompt_id] = deliver.prompt
        self.frame(wire.PromptReceipt(self.ids.new(self.now), prompt_id, deliver.id, self.now))
        return prompt_id

    def sign(self, key: EndpointKey, prompt_id: str, answer: str, how: str, decided_at_ms: int) -> str:
        """As ``agent.core.AgentCore._sign`` does, over the prompt as delivered."""
        copy = self.copies[prompt_id]
        message = answer_message(ENDPOINT, copy, answer, how, decided_at_ms)
        return b64encode(key.sign(message))

    def decide(self, key: EndpointKey, prompt_id: str, decision: str) -> list[str]:
        at = self.now
        update = wire.PromptUpdate(
            self.ids.new(at),
            prompt_id,
            "decided",
            how="user",
            decision=decision,
            decided_at_ms=at,
            key_id=key.key_id,
            sig=self.sign(key, prompt_id, decision, "user", at),
        )
        return self.frame(update)

    def export(self) -> list[str]:
        text = self.api("GET", f"/api/endpoints/{ENDPOINT}/audit")
        assert isinstance(text, str) and text.endswith("\n")
        return text.splitlines()


def verify_lines(
    lines: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, *extra: str
) -> tuple[int, list[str]]:
    """``caisey-audit verify`` (``main``, in-process) on the lines; its status and output."""
    path = tmp_path / "export.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    capsys.readouterr()
    status = main(["verify", str(path), *extra])
    return status, capsys.readouterr().out.splitlines()


def problems(out: list[str]) -> list[str]:
    return [line for line in out if line.startswith("line ")]


def fact(line: str) -> dict[str, Any]:
    item = json.loads(line)
    assert item["type"] == "fact"
    return dict(item)


def dumps(item: dict[str, Any]) -> str:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False)


def line_of(lines: list[str], where: Callable[[dict[str, Any]], bool]) -> int:
    """The 1-based line number of the first fact line matching ``where``."""
    for number, line in enumerate(lines, start=1):
        item = json.loads(line)
        if item["type"] == "fact" and where(item):
            return number
    raise AssertionError("no such fact line")


def decided(prompt_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda item: item.get("prompt_id") == prompt_id and item.get("kind") == "decided"


def relinked(lines: list[str], endpoint_id: str = ENDPOINT) -> list[str]:
    """What an attacker who rewrites the chain does: every hash and the head recomputed."""
    header, *rest = lines
    previous = json.loads(header)["genesis"]
    out, count, seq = [header], 0, 0
    for line in rest:
        item = json.loads(line)
        if item["type"] == "fact":
            previous = link(
                previous, item["seq"], item["prompt_id"], item["at_ms"], item["kind"], item["fields"], item["event_id"]
            )
            item["hash"], count, seq = previous, count + 1, item["seq"]
        elif item["type"] == "head":
            item.update(hash=previous, facts=count, seq=seq)
        out.append(dumps(item))
    return out


# --- an endpoint with three answered prompts -----------------------------------------------------


@pytest.fixture
def answered() -> tuple[Endpoint, EndpointKey, list[str]]:
    """Enrolled with a key; prompts approved, denied, approved, and one left open."""
    endpoint, key = Endpoint(), EndpointKey.generate()
    endpoint.enroll(key)
    prompts = [endpoint.delivered() for _ in range(4)]
    for prompt_id, decision in zip(prompts[:3], ("approve", "deny", "approve"), strict=True):
        sent = endpoint.decide(key, prompt_id, decision)
        assert not any('"signature_refused"' in s for s in sent), sent
    return endpoint, key, prompts


def test_an_untouched_export_verifies_with_a_verdict_per_prompt(
    answered: tuple[Endpoint, EndpointKey, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    endpoint, key, prompts = answered
    lines = endpoint.export()
    status, out = verify_lines(lines, capsys, tmp_path)
    assert status == 0, out
    assert out[0] == f"endpoint  {ENDPOINT}"
    head = json.loads(lines[-1])
    assert out[1] == f"facts     {head['facts']}" and out[2] == f"head      {head['hash']}"
    assert f"{key.key_id}  valid " in out[3] and out[3].endswith("until now")
    verdicts = {line.split()[1]: line for line in out if line.startswith("  ")}
    assert set(verdicts) == set(prompts)
    for prompt_id, state in zip(prompts[:3], ("approved", "denied", "approved"), strict=True):
        assert verdicts[prompt_id].endswith(f"{state}, signed by the endpoint (key {key.key_id})")
    assert verdicts[prompts[3]].endswith("delivered, no decision")
    assert not problems(out)
    assert out[-1].startswith(f"OK: {head['facts']} facts chain to head {head['hash']}; 4 prompts, 3 decisions")
    # The head the API shows is the one an auditor records: --head with it passes.
    recorded = endpoint.api("GET", f"/api/endpoints/{ENDPOINT}")["audit_head"]["hash"]
    assert recorded == head["hash"]
    assert verify_lines(lines, capsys, tmp_path, "--head", recorded)[0] == 0


def test_the_console_script_reads_stdin_and_speaks_json(
    answered: tuple[Endpoint, EndpointKey, list[str]], tmp_path: Path
) -> None:
    """The installed ``caisey-audit``, as a real process: ``-`` reads stdin; ``--json``."""
    endpoint, key, prompts = answered
    text = "".join(line + "\n" for line in endpoint.export())
    run = subprocess.run(
        [*audit_command(), "verify", "--json", "-"], input=text.encode(), capture_output=True, cwd=ROOT, timeout=60
    )
    assert run.returncode == 0, run.stderr.decode()
    report = json.loads(run.stdout)
    assert report["ok"] and report["endpoint_id"] == ENDPOINT and report["problems"] == []
    assert [k["key_id"] for k in report["keys"]] == [key.key_id] and report["keys"][0]["valid_until"] is None
    signed = {p["prompt_id"]: p["signed_by"] for p in report["prompts"]}
    assert signed == {**dict.fromkeys(prompts[:3], key.key_id), prompts[3]: None}
    # A tampered file, the same way: exit status 1, the line in the output.
    tampered = text.replace('"decision":"deny"', '"decision":"approve"', 1)
    run = subprocess.run([*audit_command(), "verify", "-"], input=tampered.encode(), capture_output=True, timeout=60)
    assert run.returncode == 1 and b"FAILED:" in run.stdout


def broken(line: int, seq: int) -> str:
    return f"line {line}: hash does not chain (fact seq {seq} edited, or a fact before it removed, added or moved)"


def head_mismatch(lines: list[str]) -> str:
    return f"line {len(lines)}: the head does not match the chain (facts missing at the end?)"


def test_a_changed_decision_fails_naming_its_line(
    answered: tuple[Endpoint, EndpointKey, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    endpoint, _, prompts = answered
    lines = endpoint.export()
    n = line_of(lines, decided(prompts[1]))
    item = fact(lines[n - 1])
    assert item["fields"]["decision"] == "deny"
    item["fields"]["decision"] = "approve"
    lines[n - 1] = dumps(item)
    forged = (
        f"line {n}: the signature of this approve of prompt {prompts[1]} does not verify with key "
        f"{item['fields']['key_id']}"
    )
    status, out = verify_lines(lines, capsys, tmp_path)
    assert status == 1
    assert problems(out) == [broken(n, item["seq"]), forged]  # that line only, not every later one
    assert out[-1].startswith(f"FAILED: 2 problems, the first at line {n}: hash does not chain")
    assert out[-1].endswith("; 1 prompt whose decision is not proven")
    assert any(line.startswith(f"  BAD {prompts[1]}  approved, but its signature does not verify") for line in out)
    # The attacker who relinks the whole chain is still caught, on that line, by the signature.
    status, out = verify_lines(relinked(lines), capsys, tmp_path)
    assert status == 1 and problems(out) == [forged]


def test_a_deleted_fact_fails_naming_the_line_where_it_was(
    answered: tuple[Endpoint, EndpointKey, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The denial removed: the prompt would look unanswered."""
    endpoint, _, prompts = answered
    lines = endpoint.export()
    n = line_of(lines, decided(prompts[1]))
    del lines[n - 1]
    status, out = verify_lines(lines, capsys, tmp_path)
    assert status == 1
    assert problems(out) == [broken(n, fact(lines[n - 1])["seq"]), head_mismatch(lines)]


def test_two_facts_swapped_fail_naming_the_first(
    answered: tuple[Endpoint, EndpointKey, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    endpoint, _, prompts = answered
    lines = endpoint.export()
    n = line_of(lines, decided(prompts[0]))
    seq = fact(lines[n - 1])["seq"]
    lines[n - 1], lines[n] = lines[n], lines[n - 1]
    status, out = verify_lines(lines, capsys, tmp_path)
    assert status == 1
    # Each moved line carries its own hash: the line after them cannot link to the second either.
    assert problems(out) == [
        broken(n, seq + 1),
        broken(n + 1, seq),
        f"line {n + 1}: seq {seq} is not after {seq + 1}",
        broken(n + 2, seq + 2),
    ]


def test_an_inserted_line_fails_naming_it(
    answered: tuple[Endpoint, EndpointKey, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A replayed copy of an approval, slipped in after the original."""
    endpoint, _, prompts = answered
    lines = endpoint.export()
    n = line_of(lines, decided(prompts[0]))
    seq = fact(lines[n - 1])["seq"]
    lines.insert(n, lines[n - 1])
    status, out = verify_lines(lines, capsys, tmp_path)
    assert status == 1
    assert problems(out) == [broken(n + 1, seq), f"line {n + 1}: seq {seq} is not after {seq}", head_mismatch(lines)]


def test_a_fact_resigned_with_another_key_fails_on_its_line_even_relinked(
    answered: tuple[Endpoint, EndpointKey, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The attacker turns a denial into an approval and signs it properly — with their own key."""
    endpoint, _, prompts = answered
    lines = endpoint.export()
    n = line_of(lines, decided(prompts[1]))
    item = fact(lines[n - 1])
    forger = EndpointKey.generate()
    fields = item["fields"]
    fields["decision"] = "approve"
    fields["key_id"] = forger.key_id
    fields["sig"] = endpoint.sign(forger, prompts[1], "approve", fields["how"], fields["decided_at_ms"])
    lines[n - 1] = dumps(item)
    not_ours = f"line {n}: key {forger.key_id} is not in this endpoint's key history"
    status, out = verify_lines(lines, capsys, tmp_path)
    assert status == 1
    assert problems(out) == [
        f"line {n}: hash does not chain (fact seq {item['seq']} edited, or a fact before it removed, added or moved)",
        not_ours,
    ]
    status, out = verify_lines(relinked(lines), capsys, tmp_path)
    assert status == 1 and problems(out) == [not_ours]
    assert (
        out[-1]
        == f"FAILED: 1 problem, the first at line {n}: {not_ours[len(f'line {n}: ') :]}; 1 prompt whose decision is not proven"
    )


def test_a_truncated_export_fails_at_its_end(
    answered: tuple[Endpoint, EndpointKey, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The last decision cut off with the head: what is left links, but the end is missing."""
    endpoint, _, prompts = answered
    lines = endpoint.export()
    cut = lines[: line_of(lines, decided(prompts[2])) - 1]
    status, out = verify_lines(cut, capsys, tmp_path)
    assert status == 1
    assert problems(out) == [f"line {len(cut) + 1}: no head line: the export is cut short"]


def test_a_head_other_than_the_recorded_one_fails(
    answered: tuple[Endpoint, EndpointKey, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An auditor recorded the head; the history was later rewritten consistently (a decision
    dropped, every hash recomputed): it links, and only the recorded head shows the rewrite."""
    endpoint, _, prompts = answered
    lines = endpoint.export()
    recorded = json.loads(lines[-1])["hash"]
    rewritten = relinked([line for line in lines if not decided(prompts[2])(json.loads(line))])
    assert verify_lines(rewritten, capsys, tmp_path)[0] == 0  # what a chain alone cannot prove
    status, out = verify_lines(rewritten, capsys, tmp_path, "--head", recorded)
    assert status == 1
    assert problems(out) == [
        f"line {len(rewritten)}: the chain ends at {json.loads(rewritten[-1])['hash']}, not at the recorded head "
        f"{recorded}: its history differs from the one recorded"
    ]
    status, out = verify_lines(lines[:-1], capsys, tmp_path, "--head", recorded)
    assert status == 1 and f"line {len(lines)}: no head to compare with the recorded head {recorded}" in out


# --- re-keying ----------------------------------------------------------------------------------


def test_an_export_across_a_rekey_verifies_each_decision_against_its_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A decision signed by the old key before an admin re-enrollment verifies; one signed by
    the old key after it is refused by the bridge (recorded as refused, not as a decision),
    the new key's answer is the one committed, and the export verifies. Forging the refused
    answer into the chain as a decision (relinked) fails: the old key was retired then."""
    endpoint, old, new = Endpoint(), EndpointKey.generate(), EndpointKey.generate()
    endpoint.enroll(old)
    before = endpoint.delivered()
    endpoint.decide(old, before, "approve")
    after = endpoint.delivered()
    endpoint.enroll(new, ADMIN)
    sent = endpoint.decide(old, after, "approve")
    assert any('"signature_refused"' in s and "retired_key" in s for s in sent), sent
    endpoint.decide(new, after, "deny")
    lines = endpoint.export()

    status, out = verify_lines(lines, capsys, tmp_path)
    assert status == 0, out
    keys = [line for line in out if f"{old.key_id}  valid " in line or f"{new.key_id}  valid " in line]
    assert len(keys) == 2 and keys[0].startswith("keys      " + old.key_id) and keys[1].endswith("until now")
    assert "until now" not in keys[0]
    verdicts = {line.split()[1]: line for line in out if line.startswith("  ")}
    assert verdicts[before].endswith(f"approved, signed by the endpoint (key {old.key_id})")
    assert verdicts[after].endswith(f"denied, signed by the endpoint (key {new.key_id})")
    refused = [fact(x) for x in lines if '"signature_refused"' in x]
    assert [(f["prompt_id"], f["fields"]["reason"], f["fields"]["key_id"]) for f in refused] == [
        (after, "retired_key", old.key_id)
    ]
    assert [fact(x)["prompt_id"] for x in lines if '"kind":"decided"' in x] == [before, after]

    # The forger swaps the new key's denial for the old key's approval the bridge refused.
    n = line_of(lines, decided(after))
    item = fact(lines[n - 1])
    fields = item["fields"]
    fields.update(decision="approve", key_id=old.key_id)
    fields["sig"] = endpoint.sign(old, after, "approve", "user", fields["decided_at_ms"])
    lines[n - 1] = dumps(item)
    status, out = verify_lines(relinked(lines), capsys, tmp_path)
    assert status == 1
    (problem,) = problems(out)
    assert problem.startswith(f"line {n}: key {old.key_id} was not valid at ")


# --- a hostile file -------------------------------------------------------------------------------


def test_control_characters_from_the_file_are_neutralised(
    answered: tuple[Endpoint, EndpointKey, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    endpoint, _, _ = answered
    lines = endpoint.export()
    header = json.loads(lines[0])
    header["endpoint_id"] = "\x1b]0;owned\x07\x1b[2J\u202eevil" + "x" * 1000
    lines[0] = dumps(header)
    item = fact(lines[1])
    item["kind"] = "\x1b[31mred"
    lines[1] = dumps(item)
    status, out = verify_lines(lines, capsys, tmp_path)
    assert status == 1
    text = "\n".join(out)
    assert not any(ch in text for ch in "\x1b\x07\u202e")
    assert out[0].startswith("endpoint  \\x1b]0;owned\\x07\\x1b[2J\\u202eevil")
    assert all(len(line) < 4 * MAX_SHOWN_CHARS for line in out)
    # --json escapes them too (ASCII only).
    capsys.readouterr()
    path = tmp_path / "export.jsonl"
    assert main(["verify", "--json", str(path)]) == 1
    raw = capsys.readouterr().out
    assert raw.isascii() and json.loads(raw)["endpoint_id"] == header["endpoint_id"]


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["verify", str(tmp_path)]) == 2  # a directory
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_an_empty_or_foreign_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = verify_lines([], capsys, tmp_path)
    assert status == 1 and problems(out) == ["line 1: no head line: the export is cut short"]
    status, out = verify_lines(['{"type":"header","format":"other","version":1}'], capsys, tmp_path)
    assert status == 1 and problems(out) == ["line 1: not a caisey.audit v1 export"]


def test_a_removed_endpoints_export_verifies_and_a_prompt_created_after_removal_fails(
    answered: tuple[Endpoint, EndpointKey, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 17: a removal is a chained endpoint fact; the signed decisions before it still
    verify, its open prompt was cancelled by the admin, and a prompt made up after it fails."""
    endpoint, _, prompts = answered
    removed = endpoint.api("DELETE", f"/api/endpoints/{ENDPOINT}", headers=ADMIN)
    assert removed["removed_by"] == "root"
    lines = endpoint.export()
    status, out = verify_lines(lines, capsys, tmp_path)
    assert status == 0, out
    assert any(line.startswith("removed ") for line in out), out
    for prompt_id in prompts[:3]:
        assert any(prompt_id in line and "signed by the endpoint" in line for line in out), out
    assert any(prompts[3] in line and "cancelled" in line for line in out), out
    removal = fact(lines[line_of(lines, lambda item: item["kind"] == "endpoint_removed") - 1])
    assert removal["fields"] == {"by": "root", "cancelled": [prompts[3]]}
    # A prompt created after the removal (its chain relinked, as a forger would): refused.
    created = next(fact(line) for line in lines if '"kind":"created"' in line)
    forged = dict(created, seq=removal["seq"] + 1, prompt_id="01ZZZZZZZZZZZZZZZZZZZZZZZZ", at_ms=removal["at_ms"] + 1)
    head = lines[-1]
    forged_lines = relinked([*lines[:-1], dumps(forged), head])
    status, out = verify_lines(forged_lines, capsys, tmp_path)
    assert status != 0
    assert problems(out) == [
        f"line {len(forged_lines) - 1}: prompt 01ZZZZZZZZZZZZZZZZZZZZZZZZ created after the endpoint was removed"
    ]
