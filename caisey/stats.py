"""Per-endpoint statistics and the patterns read from them (issue 14, DESIGN §12) — pure.

Storage and I/O are the bridge's (``worker.endpoint_stats``); this module holds what the
numbers mean, so both hosts and the tests compute them the same way.

**Outcome classes.** A prompt that has ended is counted once in its creation's local day and
hour (the endpoint user's time zone, ``caisey.localtime``), and moved if a provisional final
is replaced (R4: ``expired`` → ``approved``):

- ``answered``: approved or denied by the user (``decided_how`` ``user``);
- ``unattended``: approved or denied by a no-user or endpoint policy — nobody answered;
- ``ignored``: delivered, not answered (expired, or withdrawn after it reached the endpoint);
- ``unreachable``: never delivered (``failed_to_deliver``);
- ``withdrawn``: cancelled or superseded before it reached the endpoint — no chance given,
  left out of every rate.

"Reached" = answered + unattended + ignored; "missed" = unattended + ignored (reached, not
answered); "counted" = reached + unreachable. The answer rate is answered / counted.

**Latencies** (time to deliver — the receipt; to present — acknowledged; to answer — the
decision; each from creation) go into fixed log-scale bins, four per doubling from 250 ms
(``latency_bin``), kept per local day: a percentile over 30 or 90 days reads at most
days × ``LATENCY_BINS`` counts whatever the history's length, and is exact to the bin: the
reported value is the bin's geometric middle, within 9.1 % of any sample in it.

**Findings** (``find_patterns``): a bucket — a band of 1-12 local hours (every day), a
weekday, or a band of hours on one weekday — is reported when, over the last 90 days,

1. it holds at least ``MIN_SAMPLE`` prompts,
2. its rate is at least ``MIN_RATE`` and exceeds the rate outside it by ``MARGIN``, and
3. the one-sided binomial tail of its count at the rate outside it is below ``ALPHA``, and
4. a band's first and last hour each show the habit (a rate of at least ``MIN_RATE``), so a
   band claims no hour that does not belong to it (found by the generator: "unreachable on
   Mondays between 03:00 and 15:00" for a laptop unreachable before 09:00).

``ALPHA`` is small because many buckets are tried (about 2,150 per endpoint); by the union
bound a uniform endpoint shows any finding with probability below 0.22 % even before rules 1
and 2, which in practice leave none (the 800 control endpoints of the generator's
2,000-endpoint fleet, ``sim/fleet_history.py``, show none).
Overlapping buckets of one kind keep only the most significant. The first-prompt finding
compares the answer rate of first prompts with that of re-issued ones (prompts that
supersede another) with the same three rules.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from caisey.localtime import WEEKDAYS
from caisey.prompt import DECIDED, PromptView, State

OUTCOMES = ("answered", "unattended", "ignored", "unreachable", "withdrawn")

# --- latencies -------------------------------------------------------------------------------

METRICS = ("deliver", "present", "answer")
LATENCY_BASE_MS = 250
LATENCY_BINS_PER_DOUBLING = 4
# 250 ms · 2^(88/4) ≈ 12 days: past the longest prompt lifetime (7 days) plus firming (24 h).
LATENCY_BINS = 89


def latency_bin(ms: int) -> int:
    """The bin of a duration: 0 below 250 ms, then four per doubling, the last one open."""
    if ms < LATENCY_BASE_MS:
        return 0
    index = 1 + int(LATENCY_BINS_PER_DOUBLING * math.log2(ms / LATENCY_BASE_MS))
    return min(index, LATENCY_BINS - 1)


def bin_value_ms(index: int) -> int:
    """The value a bin stands for: its geometric middle (bin 0: 125 ms)."""
    if index <= 0:
        return LATENCY_BASE_MS // 2
    return round(LATENCY_BASE_MS * 2 ** ((index - 0.5) / LATENCY_BINS_PER_DOUBLING))


def percentile_ms(histogram: Mapping[int, int], q: float) -> int | None:
    """The ``q`` quantile (0-1) of a binned histogram, or None when it is empty."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return bin_value_ms(index)
    return bin_value_ms(max(histogram))


# --- outcomes --------------------------------------------------------------------------------


def outcome_of(view: PromptView) -> str | None:
    """The outcome class of a final prompt (None while it is open)."""
    if not view.final:
        return None
    if view.state in DECIDED:
        return "answered" if (view.decided_how or "user") == "user" else "unattended"
    if view.state == State.FAILED_TO_DELIVER:
        return "unreachable"
    if view.state == State.EXPIRED:
        return "ignored" if view.received_at_ms is not None else "unreachable"
    # cancelled / superseded: did the user have a chance?
    return "ignored" if view.received_at_ms is not None else "withdrawn"


def latencies_of(view: PromptView) -> dict[str, int]:
    """The durations this view knows, from creation (bridge clock), never negative."""
    out = {}
    for metric, at in (
        ("deliver", view.received_at_ms),
        ("present", view.acknowledged_at_ms),
        ("answer", view.decided_at_ms if view.decision is not None and view.decided_how == "user" else None),
    ):
        if at is not None:
            out[metric] = max(0, at - view.created_at_ms)
    return out


@dataclass(slots=True)
class Tally:
    """Counts of outcome classes."""

    answered: int = 0
    unattended: int = 0
    ignored: int = 0
    unreachable: int = 0
    withdrawn: int = 0

    def add(self, other: Tally) -> None:
        for name in OUTCOMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def reached(self) -> int:
        return self.answered + self.unattended + self.ignored

    @property
    def missed(self) -> int:
        return self.unattended + self.ignored

    @property
    def counted(self) -> int:
        return self.reached + self.unreachable

    def as_list(self) -> list[int]:
        return [getattr(self, name) for name in OUTCOMES]

    @classmethod
    def of(cls, values: Iterable[int]) -> Tally:
        return cls(*[int(v) for v in values])

    def to_api(self) -> dict[str, int]:
        body = {name: getattr(self, name) for name in OUTCOMES}
        body.update(counted=self.counted, missed=self.counted - self.answered)
        return body


def rate(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


# --- findings --------------------------------------------------------------------------------

MIN_SAMPLE = 10
MIN_RATE = 0.5
MARGIN = 0.3
ALPHA = 1e-6
MAX_BAND_HOURS = 12
MAX_FINDINGS = 6
FINDINGS_PER_KIND = 2

Cells = Mapping[tuple[int, int], Tally]  # (weekday, hour) → tally


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p), summed in log space (no overflow at large n)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, n + 1):
        term = math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
        total += term
        if i > n * p and term < total * 1e-12:
            break  # past the mode the terms only shrink
    return min(1.0, total)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # misses_by_hour | misses_by_weekday | unreachable | first_prompt
    text: str
    k: int
    n: int
    baseline_k: int
    baseline_n: int
    p_value: float
    weekday: int | None = None
    hours: tuple[int, int] | None = None  # [start, end) local hours, end may wrap past 24

    def to_api(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "text": self.text,
            "evidence": {
                "k": self.k,
                "n": self.n,
                "rate": rate(self.k, self.n),
                "baseline_k": self.baseline_k,
                "baseline_n": self.baseline_n,
                "baseline_rate": rate(self.baseline_k, self.baseline_n),
                "p_value": float(f"{self.p_value:.3g}"),
            },
            "weekday": WEEKDAYS[self.weekday] if self.weekday is not None else None,
            "hours": list(self.hours) if self.hours is not None else None,
        }


def _band_text(start: int, length: int) -> str:
    end = (start + length) % 24
    return f"between {start:02d}:00 and {end:02d}:00"


def _weekday_band_text(weekday: int, start: int, length: int) -> str:
    day = WEEKDAYS[weekday] + "s"
    if length >= 24:
        return f"on {day}"
    if start == 0:
        return f"on {day} before {length:02d}:00"
    if start + length == 24:
        return f"on {day} after {start:02d}:00"
    return f"on {day} {_band_text(start, length)}"


def _significant(k: int, n: int, base_k: int, base_n: int) -> float | None:
    """The p-value of a bucket when rules 1-3 hold, else None."""
    if n < MIN_SAMPLE or base_n < MIN_SAMPLE:
        return None
    bucket_rate, base_rate = k / n, base_k / base_n
    if bucket_rate < MIN_RATE or bucket_rate - base_rate < MARGIN:
        return None
    # The rate elsewhere, kept off 0 so a bucket is never certain from a clean record alone.
    p = binomial_tail(k, n, max(base_rate, 0.5 / base_n))
    return p if p < ALPHA else None


def _band_sums(hours: list[Quad], *, wrap: bool = True) -> list[tuple[int, int, Quad]]:
    """Sums over every band of 1-``MAX_BAND_HOURS`` hours, by prefix sums. Bands wrap past
    midnight only when every day is counted (on one weekday, 22:00-02:00 would be two nights)."""
    doubled = hours + hours
    prefix: list[Quad] = [(0, 0, 0, 0)]
    for a, b, c, d in doubled:
        pa, pb, pc, pd = prefix[-1]
        prefix.append((pa + a, pb + b, pc + c, pd + d))
    out: list[tuple[int, int, Quad]] = []
    for start in range(24):
        for length in range(1, MAX_BAND_HOURS + 1):
            if not wrap and start + length > 24:
                break
            hi, lo = prefix[start + length], prefix[start]
            out.append((start, length, (hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2], hi[3] - lo[3])))
    return out


def _pick(candidates: list[tuple[float, Finding, frozenset[tuple[int, int]]]]) -> list[Finding]:
    """The most significant candidates of one kind that do not overlap."""
    taken: list[Finding] = []
    used: set[tuple[int, int]] = set()
    for _, finding, cells in sorted(candidates, key=lambda c: (c[0], -c[1].n)):
        if cells & used:
            continue
        taken.append(finding)
        used |= cells
        if len(taken) >= FINDINGS_PER_KIND:
            break
    return taken


def _edges_hold(hours: list[Quad], start: int, length: int, k_at: int, n_at: int) -> bool:
    """Rule 4: the band's first and last hours each have a rate of at least ``MIN_RATE``."""
    for hour in {start % 24, (start + length - 1) % 24}:
        quad = hours[hour]
        if quad[n_at] == 0 or quad[k_at] < MIN_RATE * quad[n_at]:
            return False
    return True


def _cells_of(weekday: int | None, start: int, length: int) -> frozenset[tuple[int, int]]:
    days = range(7) if weekday is None else (weekday,)
    return frozenset((d, (start + i) % 24) for d in days for i in range(min(length, 24)))


Quad = tuple[int, int, int, int]  # missed, reached, unreachable, counted


def _sum_quads(quads: Iterable[Quad]) -> Quad:
    a = b = c = d = 0
    for qa, qb, qc, qd in quads:
        a, b, c, d = a + qa, b + qb, c + qc, d + qd
    return (a, b, c, d)


def _quad(tally: Tally) -> tuple[int, int, int, int]:
    return (tally.missed, tally.reached, tally.unreachable, tally.counted)


def find_patterns(cells: Cells, first: Tally, reissued: Tally) -> list[Finding]:
    """Findings for one endpoint from its 90-day cells (rules in the module header)."""
    if sum(t.counted for t in cells.values()) < 2 * MIN_SAMPLE and first.counted + reissued.counted < 2 * MIN_SAMPLE:
        return []  # no bucket and its outside can both hold MIN_SAMPLE: nothing to test
    grid = [[_quad(cells[(d, h)]) if (d, h) in cells else (0, 0, 0, 0) for h in range(24)] for d in range(7)]
    every_day = [_sum_quads(grid[d][h] for d in range(7)) for h in range(24)]
    by_weekday = [_sum_quads(grid[d]) for d in range(7)]
    t_missed, t_reached, t_unreachable, t_counted = _sum_quads(every_day)
    found: list[Finding] = []

    # Misses by band of hours, every day: missed among reached.
    candidates = []
    for start, length, (k, n, _, _) in _band_sums(every_day):
        base_k, base_n = t_missed - k, t_reached - n
        p = _significant(k, n, base_k, base_n)
        if p is not None and _edges_hold(every_day, start, length, 0, 1):
            text = f"misses {k} of {n} prompts {_band_text(start, length)} local time"
            finding = Finding("misses_by_hour", text, k, n, base_k, base_n, p, None, (start, start + length))
            candidates.append((p, finding, _cells_of(None, start, length)))
    found += _pick(candidates)

    # Misses by weekday.
    candidates = []
    for weekday, (k, n, _, _) in enumerate(by_weekday):
        base_k, base_n = t_missed - k, t_reached - n
        p = _significant(k, n, base_k, base_n)
        if p is not None:
            text = f"misses {k} of {n} prompts on {WEEKDAYS[weekday]}s"
            finding = Finding("misses_by_weekday", text, k, n, base_k, base_n, p, weekday, None)
            candidates.append((p, finding, _cells_of(weekday, 0, 24)))
    found += _pick(candidates)

    # Unreachable: bands of hours every day or on one weekday; whole weekdays.
    candidates = []
    scopes: list[tuple[int | None, list[Quad]]] = [(None, every_day)]
    scopes += [(d, grid[d]) for d in range(7)]
    for scope_day, hours in scopes:
        bands = _band_sums(hours, wrap=scope_day is None)
        if scope_day is not None:
            bands.append((0, 24, by_weekday[scope_day]))
        for start, length, (_, _, k, n) in bands:
            base_k, base_n = t_unreachable - k, t_counted - n
            p = _significant(k, n, base_k, base_n)
            if p is None or (length < 24 and not _edges_hold(hours, start, length, 2, 3)):
                continue
            if scope_day is None:
                where = _band_text(start, length) + " local time"
            else:
                where = _weekday_band_text(scope_day, start, length)
            text = f"unreachable {where}: {k} of {n} prompts never delivered"
            hours_span = None if length >= 24 else (start, start + length)
            finding = Finding("unreachable", text, k, n, base_k, base_n, p, scope_day, hours_span)
            candidates.append((p, finding, _cells_of(scope_day, start, length)))
    found += _pick(candidates)

    # First prompts vs re-issued ones: the answer rate of each.
    k_first, n_first = first.counted - first.answered, first.counted
    p_first = _significant(k_first, n_first, reissued.counted - reissued.answered, reissued.counted)
    if p_first is not None:
        text = (
            f"answers re-issued prompts {reissued.answered} times in {reissued.counted}, "
            f"the first only {first.answered} in {first.counted}"
        )
        found.append(
            Finding("first_prompt", text, first.answered, first.counted, reissued.answered, reissued.counted, p_first)
        )
    found.sort(key=lambda f: f.p_value)
    return found[:MAX_FINDINGS]
