// Fleet view: every endpoint with connection, last seen, open prompts and last outcome.
//
// Built for 1,000+ endpoints: one row element per endpoint, created once and updated in
// place only when its line changed (a per-row signature); a 304 from the bridge changes
// nothing at all. Filtering toggles `hidden`; sorting moves existing rows.

import { h, setText, setHidden, setAttr, setClass, syncKeyed } from "./dom.js";
import { describeOutcome, fmtAgo, fmtTime, MISSED, bucketOf, onlineAsOf } from "./describe.js";

const nf = new Intl.NumberFormat();

export class FleetView {
  constructor(ctx) {
    this.ctx = ctx;
    this.title = "Fleet";
    this.rows = new Map(); // endpoint_id → <tr>
    this.data = null;
    this.sortedFor = null;
    this.lastRenderMs = 0;

    this.search = h("input", { id: "fleet-search", type: "search", placeholder: "name or id", autocomplete: "off", oninput: () => this.applyFilter() });
    this.status = h(
      "select",
      { id: "fleet-status", onchange: () => this.applyFilter() },
      h("option", { value: "" }, "any"),
      h("option", { value: "online" }, "online"),
      h("option", { value: "offline" }, "offline"),
    );
    this.attention = h(
      "select",
      { id: "fleet-attention", onchange: () => this.applyFilter() },
      h("option", { value: "" }, "all endpoints"),
      h("option", { value: "open" }, "with open prompts"),
      h("option", { value: "missed" }, "last prompt missed or undelivered"),
      h("option", { value: "never" }, "never connected"),
    );
    // Clients (DESIGN §12): the options follow the fleet's lines; "" is every client.
    this.client = h("select", { id: "fleet-client", onchange: () => this.applyFilter() }, h("option", { value: "" }, "all clients"));
    this.sort = h(
      "select",
      { id: "fleet-sort", onchange: () => this.render(true) },
      h("option", { value: "id" }, "endpoint id"),
      h("option", { value: "seen" }, "last seen (recent first)"),
      h("option", { value: "open" }, "open prompts (most first)"),
    );
    this.summary = h("p.summary", { id: "fleet-summary", "aria-live": "polite" }, "Loading endpoints…");
    this.error = h("p.form-error", { role: "alert" });
    this.tbody = h("tbody", { id: "fleet-rows" });
    this.empty = h("p.empty", { hidden: true }, "No endpoint matches these filters.");

    this.el = h(
      "section.view.fleet",
      { "aria-labelledby": "fleet-h" },
      h("h1", { id: "fleet-h", tabindex: "-1" }, "Fleet"),
      h(
        "form.filters",
        { role: "search", onsubmit: (ev) => ev.preventDefault() },
        field("fleet-search", "Search", this.search),
        field("fleet-status", "Connection", this.status),
        field("fleet-attention", "Show", this.attention),
        field("fleet-client", "Client", this.client),
        field("fleet-sort", "Sort by", this.sort),
      ),
      this.summary,
      this.error,
      h(
        "div.table-wrap",
        null,
        h(
          "table.fleet-table",
          null,
          h("caption.visually-hidden", null, "Endpoints"),
          h(
            "thead",
            null,
            h("tr", null, h("th", { scope: "col" }, "Endpoint"), h("th", { scope: "col" }, "Connection"), h("th", { scope: "col" }, "Last seen"), h("th", { scope: "col" }, "Open prompts"), h("th", { scope: "col" }, "Last outcome")),
          ),
          this.tbody,
        ),
      ),
      this.empty,
    );
  }

  async refresh() {
    const res = await this.ctx.api.endpoints();
    this.ctx.cache.fleet = res.body;
    setText(this.error, "");
    if (res.changed || this.data === null) {
      this.data = res.body.endpoints;
      this.syncClients();
      this.render(true);
    }
  }

  syncClients() {
    const clients = [...new Set(this.data.map((e) => e.client || ""))].sort();
    const sig = clients.join("\n");
    if (sig === this.clientsSig) return;
    this.clientsSig = sig;
    const chosen = this.client.value;
    this.client.replaceChildren(
      h("option", { value: "" }, "all clients"),
      ...clients.map((c) => h("option", { value: c ? `=${c}` : "-" }, c || "(no client)")),
    );
    this.client.value = [...this.client.options].some((o) => o.value === chosen) ? chosen : "";
  }

  showError(exc) {
    setText(this.error, `The bridge refused: ${exc.detail} (${exc.status} ${exc.code})`);
  }

  /** Sync rows with data (`reorder` when data or sort changed), then filter. */
  render(reorder) {
    if (!this.data) return;
    const t0 = performance.now();
    const now = this.ctx.now();
    const list = reorder ? sorted(this.data, this.sort.value) : null;
    if (list) {
      syncKeyed(this.tbody, this.rows, list, (e) => e.endpoint_id, (e) => this.makeRow(e), (row, e) => this.updateRow(row, e, now));
    }
    this.applyFilter();
    this.lastRenderMs = performance.now() - t0;
    window.__caiseyPerf = { fleetRenderMs: this.lastRenderMs, fleetRows: this.rows.size };
  }

  makeRow(e) {
    const href = `#/endpoint/${encodeURIComponent(e.endpoint_id)}`;
    const row = h(
      "tr",
      { dataset: { eid: e.endpoint_id } },
      h("td.c-name", { "data-label": "Endpoint" }, h("a.endpoint-link", { href }, h("span.label"), " ", h("span.eid")), h("span.where")),
      h("td.c-conn", { "data-label": "Connection" }, h("span.conn")),
      h("td.c-seen", { "data-label": "Last seen" }, h("time.seen")),
      h("td.c-open", { "data-label": "Open prompts" }, h("span.open")),
      h("td.c-outcome", { "data-label": "Last outcome" }, h("span.outcome")),
    );
    row._el = {
      label: row.querySelector(".label"),
      eid: row.querySelector(".eid"),
      where: row.querySelector(".where"),
      conn: row.querySelector(".conn"),
      seen: row.querySelector(".seen"),
      open: row.querySelector(".open"),
      outcome: row.querySelector(".outcome"),
    };
    return row;
  }

  updateRow(row, e, now) {
    const sig = JSON.stringify(e);
    row._data = e;
    row._hay = `${e.endpoint_id} ${e.label || ""} ${e.client || ""} ${e.site || ""}`.toLowerCase();
    if (row._sig === sig) {
      this.updateTimes(row, now);
      return;
    }
    row._sig = sig;
    const x = row._el;
    setText(x.label, e.label || e.endpoint_id);
    setText(x.eid, e.label ? e.endpoint_id : "");
    setText(x.where, [e.client, e.site].filter(Boolean).join(" · "));
    // Registered, its agent never connected yet (issue 17: "waiting for its agent").
    const waiting = !e.online && !e.last_seen;
    setText(x.conn, e.online ? "Online" : waiting ? "Waiting for its agent" : "Offline");
    x.conn.className = `conn badge ${e.online ? "is-online" : waiting ? "is-waiting" : "is-offline"}`;
    setText(x.open, e.open_prompts ? nf.format(e.open_prompts) : "0");
    setClass(x.open, "has-open", e.open_prompts > 0);
    const out = describeOutcome(e.last_outcome, now);
    setText(x.outcome, out.text);
    x.outcome.className = `outcome tone-${out.tone}`;
    setAttr(x.seen, "datetime", e.last_seen);
    this.updateTimes(row, now);
  }

  updateTimes(row, now) {
    const e = row._data;
    const x = row._el;
    setText(x.seen, e.online ? onlineAsOf(e, now, "now") : e.last_seen ? `${fmtAgo(e.last_seen, now)}` : "never");
    setAttr(x.seen, "title", e.last_seen ? fmtTime(e.last_seen, now) : null);
    if (e.last_outcome) setText(x.outcome, describeOutcome(e.last_outcome, now).text);
  }

  applyFilter() {
    if (!this.data) return;
    const q = this.search.value.trim().toLowerCase();
    const status = this.status.value;
    const attention = this.attention.value;
    let shown = 0;
    let online = 0;
    let open = 0;
    for (const row of this.tbody.children) {
      const e = row._data;
      if (e.online) online++;
      if (e.open_prompts) open++;
      let match = !q || row._hay.includes(q);
      if (match && status) match = status === "online" ? e.online : !e.online;
      if (match && attention === "open") match = e.open_prompts > 0;
      if (match && attention === "missed") match = !!e.last_outcome && MISSED.has(bucketOf(e.last_outcome.state));
      if (match && attention === "never") match = !e.last_seen;
      if (match && this.client.value) match = this.client.value === "-" ? !e.client : this.client.value === `=${e.client}`;
      setHidden(row, !match);
      if (match) shown++;
    }
    const total = this.data.length;
    const filtered = shown === total ? "" : ` · showing ${nf.format(shown)}`;
    setText(this.summary, `${nf.format(total)} endpoints · ${nf.format(online)} online · ${nf.format(open)} with open prompts${filtered}`);
    setHidden(this.empty, shown > 0 || total === 0);
    if (total === 0) setText(this.summary, "No endpoints yet. Add one with “Add endpoint” above.");
  }

  tick(now) {
    // Relative times move on their own; only rows whose text changes are touched.
    if (!this.data) return;
    for (const row of this.rows.values()) if (!row.hidden) this.updateTimes(row, now);
  }
}

function field(id, label, control) {
  return h("div.field", null, h("label", { for: id }, label), control);
}

function sorted(list, by) {
  const copy = list.slice();
  const byId = (a, b) => (a.endpoint_id < b.endpoint_id ? -1 : a.endpoint_id > b.endpoint_id ? 1 : 0);
  if (by === "seen") {
    const seen = (e) => (e.online ? Infinity : e.last_seen ? Date.parse(e.last_seen) : -Infinity);
    copy.sort((a, b) => seen(b) - seen(a) || byId(a, b));
  } else if (by === "open") {
    copy.sort((a, b) => b.open_prompts - a.open_prompts || byId(a, b));
  } else {
    copy.sort(byId);
  }
  return copy;
}
