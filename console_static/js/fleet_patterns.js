// The Patterns page (#/patterns): what the fleet's last 90 days say, from GET /api/patterns —
// findings in words with their evidence, endpoints ranked by missed prompts (a sortable
// table), a heat map of misses by weekday × hour (each endpoint's own local time), and one
// endpoint's p95 time to answer week by week (GET /api/endpoints/{eid}/stats). Every chart has
// its table under "Show … as a table".

import { h, setText, replaceChildren } from "./dom.js";
import { fmtDuration, pad2 } from "./describe.js";

const SVG = "http://www.w3.org/2000/svg";
const WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const nf = new Intl.NumberFormat();

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const pct = (rate) => (rate === null || rate === undefined ? "—" : `${Math.round(rate * 100)} %`);
const ms = (v) => (v === null || v === undefined ? "—" : fmtDuration(v));

// Sortable columns: key, heading, value for sorting, cell text.
const COLUMNS = [
  ["endpoint_id", "Endpoint", (r) => r.endpoint_id, (r) => r.endpoint_id],
  ["time_zone", "Local time", (r) => r.time_zone || "", (r) => r.time_zone || "UTC (not reported)"],
  ["counted", "Prompts", (r) => r.counted, (r) => nf.format(r.counted)],
  ["missed", "Missed", (r) => r.missed, (r) => nf.format(r.missed)],
  ["unreachable", "Never delivered", (r) => r.unreachable, (r) => nf.format(r.unreachable)],
  ["answer_rate", "Answered", (r) => r.answer_rate ?? -1, (r) => pct(r.answer_rate)],
  ["answer_p95_ms", "p95 time to answer", (r) => r.answer_p95_ms ?? -1, (r) => ms(r.answer_p95_ms)],
  ["findings", "Findings", (r) => r.findings, (r) => nf.format(r.findings)],
];

export class PatternsView {
  constructor(ctx) {
    this.ctx = ctx;
    this.title = "Patterns";
    this.data = null;
    this.shownPath = null; // the path whose answer `data` is
    this.sortKey = "missed";
    this.sortDesc = true;
    this.selected = null; // endpoint whose p95 over time is shown
    this.stats = null;
    this.client = h("input", { id: "patterns-client", type: "text", autocomplete: "off", maxlength: "128" });
    this.site = h("input", { id: "patterns-site", type: "text", autocomplete: "off", maxlength: "128" });
    this.query = "";
    this.summary = h("p.summary", { id: "patterns-summary", "aria-live": "polite" }, "Loading patterns…");
    this.error = h("p.form-error", { role: "alert" });
    this.findings = h("div", { id: "patterns-findings" });
    this.table = h("div.table-wrap", { id: "patterns-ranking" });
    this.heat = h("div", { id: "patterns-heat" });
    this.trend = h("div", { id: "patterns-trend" });
    this.el = h(
      "section.view.patterns-page",
      { "aria-labelledby": "patterns-page-h" },
      h("h1", { id: "patterns-page-h", tabindex: "-1" }, "Patterns"),
      h(
        "form.filters",
        {
          role: "search",
          onsubmit: (ev) => {
            ev.preventDefault();
            const q = new URLSearchParams();
            if (this.client.value.trim()) q.set("client", this.client.value.trim());
            if (this.site.value.trim()) q.set("site", this.site.value.trim());
            this.query = q.toString();
            this.ctx.refreshSoon();
          },
        },
        h("div.field", null, h("label", { for: "patterns-client" }, "Client"), this.client),
        h("div.field", null, h("label", { for: "patterns-site" }, "Site"), this.site),
        h("button.secondary", { type: "submit" }, "Filter"),
      ),
      this.summary,
      this.error,
      h("section.card", { "aria-labelledby": "findings-h" }, h("h2", { id: "findings-h" }, "Findings"), this.findings),
      h("section.card", { "aria-labelledby": "ranking-h" }, h("h2", { id: "ranking-h" }, "Endpoints by missed prompts"), this.table),
      h("section.card", { "aria-labelledby": "heat-h" }, h("h2", { id: "heat-h" }, "Missed prompts by weekday and hour ", h("span.hint", null, "(each endpoint's local time)")), this.heat),
      h("section.card", { "aria-labelledby": "trend-h" }, h("h2", { id: "trend-h" }, "p95 time to answer, week by week"), this.trend),
    );
  }

  async refresh() {
    const path = "/api/patterns?limit=200" + (this.query ? `&${this.query}` : "");
    const r = await this.ctx.api.get(path, { poll: true });
    setText(this.error, "");
    // A 304 answers for this path's last body, which is not the one shown after a filter changed.
    if (r.changed || this.data === null || this.shownPath !== path) {
      this.data = r.body;
      this.shownPath = path;
      this.render();
    }
    const first = this.selected ?? this.data.ranking[0]?.endpoint_id ?? null;
    if (first) {
      const st = await this.ctx.api.get(`/api/endpoints/${encodeURIComponent(first)}/stats`, { poll: true });
      if (st.changed || this.stats === null || this.stats.endpoint_id !== first) {
        this.stats = st.body;
        this.renderTrend();
      }
    } else {
      replaceChildren(this.trend, h("p.empty", null, "No endpoint has answered a prompt yet."));
    }
  }

  showError(exc) {
    setText(this.error, `The bridge refused: ${exc.detail} (${exc.status} ${exc.code})`);
  }

  render() {
    const d = this.data;
    const t = d.totals;
    const filter = [d.filter.client && `client “${d.filter.client}”`, d.filter.site && `site “${d.filter.site}”`].filter(Boolean).join(", ");
    setText(
      this.summary,
      `${nf.format(d.endpoints)} endpoints${filter ? ` (${filter})` : ""}, ${nf.format(d.endpoints_with_history)} with history · last ${d.window_days} days: ` +
        `${nf.format(t.counted)} prompts, ${nf.format(t.answered)} answered, ${nf.format(t.missed)} missed (${nf.format(t.unreachable)} never delivered) · ` +
        `${nf.format(d.findings_total)} findings.`,
    );
    this.renderFindings();
    this.renderTable();
    this.renderHeat();
  }

  renderFindings() {
    const d = this.data;
    const r = d.rules;
    const rules = h(
      "p.hint",
      null,
      `A finding needs at least ${r.min_sample} prompts in its hours or days, a rate of at least ${pct(r.min_rate)} that is ${pct(r.margin)} above the endpoint's rate elsewhere, and a binomial tail below ${r.alpha}.`,
    );
    if (!d.findings.length) {
      replaceChildren(this.findings, h("p.empty", null, "No pattern stands out: no endpoint misses prompts at particular times more than at others."), rules);
      return;
    }
    replaceChildren(
      this.findings,
      h(
        "ul.findings",
        null,
        d.findings.map((f) => {
          const e = f.evidence;
          return h(
            "li.finding",
            { "data-kind": f.kind },
            h("a", { href: `#/endpoint/${encodeURIComponent(f.endpoint_id)}` }, f.label || f.endpoint_id),
            " ",
            h("span.finding-text", null, f.text),
            h("span.hint", null, ` — ${e.k} of ${e.n} (${pct(e.rate)}); elsewhere ${e.baseline_k} of ${e.baseline_n} (${pct(e.baseline_rate)}); p = ${e.p_value}${f.time_zone ? `; ${f.time_zone}` : ""}`),
          );
        }),
      ),
      rules,
    );
  }

  sorted() {
    const col = COLUMNS.find((c) => c[0] === this.sortKey);
    const rows = [...this.data.ranking];
    rows.sort((a, b) => {
      const x = col[2](a);
      const y = col[2](b);
      const cmp = typeof x === "string" ? x.localeCompare(y) : x - y;
      return (this.sortDesc ? -cmp : cmp) || a.endpoint_id.localeCompare(b.endpoint_id);
    });
    return rows;
  }

  renderTable() {
    if (!this.data.ranking.length) {
      replaceChildren(this.table, h("p.empty", null, "No endpoint has prompt history yet."));
      return;
    }
    const head = COLUMNS.map(([key, label]) => {
      const active = key === this.sortKey;
      return h(
        "th",
        { scope: "col", "aria-sort": active ? (this.sortDesc ? "descending" : "ascending") : "none" },
        h(
          "button.sort",
          {
            type: "button",
            "data-sort": key,
            onclick: () => {
              if (this.sortKey === key) this.sortDesc = !this.sortDesc;
              else [this.sortKey, this.sortDesc] = [key, key !== "endpoint_id" && key !== "time_zone"];
              this.renderTable();
              this.table.querySelector(`button[data-sort="${key}"]`)?.focus();
            },
          },
          label,
          active ? (this.sortDesc ? " ▼" : " ▲") : "",
        ),
      );
    });
    const rows = this.sorted().map((r) =>
      h(
        "tr",
        { "data-endpoint": r.endpoint_id },
        COLUMNS.map(([key, , , text], i) => {
          if (i === 0) {
            return h(
              "th",
              { scope: "row" },
              h("a", { href: `#/endpoint/${encodeURIComponent(r.endpoint_id)}` }, r.label || r.endpoint_id),
              r.label ? h("span.eid", null, ` ${r.endpoint_id}`) : null,
              " ",
              h("button.link", { type: "button", "aria-label": `Show ${r.endpoint_id}'s time to answer`, onclick: () => this.select(r.endpoint_id) }, "trend"),
            );
          }
          return h("td", { "data-col": key }, text(r));
        }),
      ),
    );
    replaceChildren(
      this.table,
      h("table.patterns-table", { id: "patterns-table" }, h("caption.visually-hidden", null, "Endpoints ranked by missed prompts"), h("thead", null, h("tr", null, head)), h("tbody", null, rows)),
    );
  }

  select(eid) {
    this.selected = eid;
    this.stats = null;
    replaceChildren(this.trend, h("p", null, `Loading ${eid}…`));
    this.ctx.refreshSoon();
  }

  renderHeat() {
    const cells = new Map(this.data.heat.map((c) => [`${c.weekday}/${c.hour}`, c]));
    const rate = (c) => (c && c.counted ? c.missed / c.counted : null);
    const W = 600;
    const left = 84;
    const top = 18;
    const cw = (W - left) / 24;
    const ch = 22;
    const H = top + 7 * ch + 4;
    const summaryId = "heat-summary";
    let worst = null;
    for (const c of this.data.heat) if (c.counted >= 5 && (!worst || rate(c) > rate(worst))) worst = c;
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "heat-map", role: "img", "aria-labelledby": summaryId, focusable: "false" });
    for (let hour = 0; hour < 24; hour += 3) svg.append(s("text", { x: left + hour * cw + cw / 2, y: 12, class: "tick", "text-anchor": "middle" }, pad2(hour)));
    WEEKDAYS.forEach((day, d) => {
      svg.append(s("text", { x: left - 6, y: top + d * ch + ch / 2 + 4, class: "tick", "text-anchor": "end" }, day));
      for (let hour = 0; hour < 24; hour++) {
        const c = cells.get(`${day}/${hour}`);
        const r = rate(c);
        const title = c ? `${day} ${pad2(hour)}:00 — ${c.missed} of ${c.counted} missed` : `${day} ${pad2(hour)}:00 — no prompts`;
        svg.append(
          s(
            "rect",
            { x: left + hour * cw + 1, y: top + d * ch + 1, width: cw - 2, height: ch - 2, class: c ? "heat-cell" : "heat-empty", "fill-opacity": r === null ? 1 : (0.08 + 0.92 * r).toFixed(2), "data-day": day, "data-hour": hour },
            s("title", null, title),
          ),
        );
      }
    });
    const words = worst
      ? `Misses are highest on ${worst.weekday}s at ${pad2(worst.hour)}:00: ${worst.missed} of ${worst.counted} prompts.`
      : "Too few prompts yet to compare hours.";
    const rows = this.data.heat.filter((c) => c.counted);
    replaceChildren(
      this.heat,
      h("p", { id: summaryId }, words),
      svg,
      h("p.hint", null, "Darker: a larger share of that hour's prompts went unanswered or undelivered."),
      h(
        "details.chart-table",
        null,
        h("summary", null, "Show the heat map as a table"),
        rows.length
          ? h(
              "table.heat-table",
              null,
              h("thead", null, h("tr", null, ["Weekday", "Hour", "Prompts", "Missed", "Never delivered", "Answered"].map((t) => h("th", { scope: "col" }, t)))),
              h("tbody", null, rows.map((c) => h("tr", null, h("th", { scope: "row" }, c.weekday), h("td", null, `${pad2(c.hour)}:00`), h("td", null, c.counted), h("td", null, c.missed), h("td", null, c.unreachable), h("td", null, c.answered)))),
            )
          : h("p.empty", null, "No prompts yet."),
      ),
    );
  }

  renderTrend() {
    const st = this.stats;
    const weeks = st.answer_p95_by_week;
    const known = weeks.filter((w) => w.p95_ms !== null);
    const summaryId = "trend-summary";
    const zone = st.time_zone.note ? `hours in UTC: ${st.time_zone.note}` : `local time ${st.time_zone.effective}`;
    const words = known.length
      ? `${st.endpoint_id}: p95 time to answer ${ms(known[known.length - 1].p95_ms)} in the week from ${known[known.length - 1].week_start}; over 30 days ${ms(st.latency.answer["30d"].p95_ms)} (p50 ${ms(st.latency.answer["30d"].p50_ms)}), ${zone}.`
      : `${st.endpoint_id}: no answered prompt in the last ${weeks.length} weeks (${zone}).`;
    const W = 600;
    const H = 160;
    const left = 56;
    const bottom = 22;
    const top = 8;
    const max = Math.max(1, ...known.map((w) => w.p95_ms));
    const colW = (W - left) / weeks.length;
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "trend-chart", role: "img", "aria-labelledby": summaryId, focusable: "false" });
    svg.append(s("line", { x1: left, y1: H - bottom + 0.5, x2: W, y2: H - bottom + 0.5, class: "axis" }));
    svg.append(s("text", { x: left - 4, y: top + 8, class: "tick", "text-anchor": "end" }, ms(max)));
    weeks.forEach((w, i) => {
      const x = left + i * colW + 3;
      if (w.p95_ms !== null) {
        const height = ((H - bottom - top) * w.p95_ms) / max;
        svg.append(s("rect", { x, y: H - bottom - height, width: colW - 6, height, class: "trend-bar", "data-week": w.week_start }, s("title", null, `week of ${w.week_start}: p95 ${ms(w.p95_ms)} over ${w.n} answers`)));
      }
      if (i % 3 === 0) svg.append(s("text", { x: x + (colW - 6) / 2, y: H - 6, class: "tick", "text-anchor": "middle" }, w.week_start.slice(5)));
    });
    replaceChildren(
      this.trend,
      h("p", { id: summaryId }, h("a", { href: `#/endpoint/${encodeURIComponent(st.endpoint_id)}` }, st.endpoint_id), words.slice(st.endpoint_id.length)),
      svg,
      h(
        "details.chart-table",
        null,
        h("summary", null, "Show the weeks as a table"),
        h(
          "table.trend-table",
          null,
          h("thead", null, h("tr", null, ["Week from", "Answers", "p95 time to answer"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", null, weeks.map((w) => h("tr", null, h("th", { scope: "row" }, w.week_start), h("td", null, w.n), h("td", null, ms(w.p95_ms))))),
        ),
      ),
    );
  }
}
