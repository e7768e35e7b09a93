// Patterns: per-endpoint outcome history and an hour-of-day × outcome chart, built from the
// endpoint's prompts (the last page the bridge returns), so "this endpoint misses prompts
// at lunch" is visible at a glance — and said in words, for those who do not read charts.
// Hours are the endpoint user's local ones (the zone its agent reported, issue 14), falling
// back to the browser's when the endpoint has none. The fleet-wide page is fleet_patterns.js.

import { h } from "./dom.js";
import { BUCKETS, MISSED, STATE_WORD, bucketOf, fmtTime, pad2 } from "./describe.js";
import { promptHref } from "./actions.js";

const SVG = "http://www.w3.org/2000/svg";
const SYMBOL = { approved: "✓", denied: "✗", expired: "⏱", failed: "!", withdrawn: "–", open: "…" };
const HISTORY_MAX = 60;

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** The hour (0–23) of an instant in an IANA zone (undefined: the browser's own). */
export function hourIn(iso, timeZone) {
  const date = new Date(iso);
  if (!timeZone) return date.getHours();
  try {
    const text = new Intl.DateTimeFormat("en-GB", { hour: "numeric", hourCycle: "h23", timeZone }).format(date);
    return Number.parseInt(text, 10) % 24;
  } catch {
    return date.getUTCHours(); // a zone this browser does not know: the bridge reads it as UTC too
  }
}

/** Counts per hour (0–23, in `timeZone`: the endpoint's local time) per bucket. */
export function hourMatrix(prompts, timeZone) {
  const rows = Array.from({ length: 24 }, () => Object.fromEntries(BUCKETS.map((b) => [b.key, 0])));
  for (const p of prompts) rows[hourIn(p.created_at, timeZone)][bucketOf(p.state)]++;
  return rows;
}

/** One sentence about when this endpoint misses prompts (or that it does not). */
export function missSummary(prompts, timeZone) {
  const finished = prompts.filter((p) => bucketOf(p.state) !== "open" && bucketOf(p.state) !== "withdrawn");
  const missed = finished.filter((p) => MISSED.has(bucketOf(p.state)));
  if (finished.length === 0) return "No answered or missed prompts yet.";
  if (missed.length === 0) return `All ${finished.length} finished prompts were answered.`;
  const m = hourMatrix(finished, timeZone);
  let worst = null;
  m.forEach((row, hour) => {
    const total = Object.values(row).reduce((a, b) => a + b, 0);
    const miss = row.expired + row.failed;
    if (total && miss && (!worst || miss / total > worst.rate || (miss / total === worst.rate && miss > worst.miss))) {
      worst = { hour, miss, total, rate: miss / total };
    }
  });
  const when = `${pad2(worst.hour)}:00–${pad2((worst.hour + 1) % 24)}:00`;
  return `${missed.length} of ${finished.length} finished prompts went unanswered or undelivered; most at ${when} (${worst.miss} of ${worst.total}).`;
}

export function patternsPanel(eid, prompts, now, timeZone) {
  const summaryId = "patterns-summary";
  const zoneWords = timeZone ? `the endpoint's local time, ${timeZone}` : "your local time: the endpoint has not reported its zone";
  return h(
    "div.patterns",
    null,
    h("p", { id: summaryId, class: "patterns-summary" }, missSummary(prompts, timeZone)),
    h("h3", { id: "history-h" }, "Outcome history ", h("span.hint", null, `(last ${Math.min(HISTORY_MAX, prompts.length)}, oldest left)`)),
    historyStrip(eid, prompts, now),
    h("h3", { id: "hours-h" }, "By hour of day ", h("span.hint", { id: "hours-zone" }, `(${zoneWords}, when created)`)),
    hourChart(prompts, summaryId, timeZone),
    legend(),
    h("details.chart-table", null, h("summary", null, "Show the chart as a table"), hourTable(prompts, timeZone)),
  );
}

function historyStrip(eid, prompts, now) {
  const recent = prompts.slice(0, HISTORY_MAX).reverse();
  if (!recent.length) return h("p.empty", null, "No prompts yet.");
  return h(
    "ol.history",
    { "aria-labelledby": "history-h" },
    recent.map((p) => {
      const b = bucketOf(p.state);
      const label = `${STATE_WORD[p.state]} — “${p.title}”, created ${fmtTime(p.created_at, now)}`;
      return h("li", null, h(`a.cell.b-${b}`, { href: promptHref(eid, p.prompt_id), title: label, "aria-label": label }, SYMBOL[b]));
    }),
  );
}

function hourChart(prompts, summaryId, timeZone) {
  const m = hourMatrix(prompts, timeZone);
  const max = Math.max(1, ...m.map((row) => Object.values(row).reduce((a, b) => a + b, 0)));
  const W = 480;
  const H = 150;
  const left = 26;
  const bottom = 20;
  const top = 6;
  const colW = (W - left) / 24;
  const scale = (H - bottom - top) / max;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "hour-chart", role: "img", "aria-labelledby": summaryId, focusable: "false" });
  svg.append(s("line", { x1: left, y1: H - bottom + 0.5, x2: W, y2: H - bottom + 0.5, class: "axis" }));
  svg.append(s("text", { x: left - 4, y: top + 8, class: "tick", "text-anchor": "end" }, max));
  svg.append(s("text", { x: left - 4, y: H - bottom, class: "tick", "text-anchor": "end" }, 0));
  m.forEach((row, hour) => {
    const x = left + hour * colW + 2;
    let y = H - bottom;
    for (const b of BUCKETS) {
      const n = row[b.key];
      if (!n) continue;
      const height = n * scale;
      y -= height;
      svg.append(s("rect", { x, y, width: colW - 4, height, class: `b-${b.key}`, "data-hour": hour, "data-bucket": b.key }, s("title", null, `${pad2(hour)}:00 — ${b.label}: ${n}`)));
    }
    if (hour % 3 === 0) svg.append(s("text", { x: x + (colW - 4) / 2, y: H - 6, class: "tick", "text-anchor": "middle" }, pad2(hour)));
  });
  return svg;
}

function legend() {
  return h(
    "ul.legend",
    { "aria-label": "Legend" },
    BUCKETS.map((b) => h("li", null, h(`span.swatch.b-${b.key}`, { "aria-hidden": "true" }, SYMBOL[b.key]), ` ${b.label}`)),
  );
}

function hourTable(prompts, timeZone) {
  const m = hourMatrix(prompts, timeZone);
  const used = m.map((row, hour) => ({ row, hour })).filter(({ row }) => Object.values(row).some(Boolean));
  if (!used.length) return h("p.empty", null, "No prompts yet.");
  return h(
    "table.hour-table",
    null,
    h("thead", null, h("tr", null, h("th", { scope: "col" }, "Hour"), BUCKETS.map((b) => h("th", { scope: "col" }, b.label)))),
    h(
      "tbody",
      null,
      used.map(({ row, hour }) => h("tr", null, h("th", { scope: "row" }, `${pad2(hour)}:00`), BUCKETS.map((b) => h("td", null, row[b.key])))),
    ),
  );
}
