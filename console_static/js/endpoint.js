// Endpoint view: the endpoint's line, its prompts newest first (each state in plain words,
// with Cancel / Re-issue / Timeline), the create form, its signing keys with the audit
// export (DESIGN §10), and its patterns.

import { ApiError, NetworkError } from "./api.js";
import { h, setText, setHidden, setAttr, syncKeyed, replaceChildren } from "./dom.js";
import { describeAuditExport, describeKeys, describePrompt, fmtAgo, fmtTime, onlineAsOf, OPEN_STATES, pad2 } from "./describe.js";
import { cancelPrompt, cancellable, createPrompt, promptHref, reissuePrompt } from "./actions.js";
import { patternsPanel } from "./patterns.js";
import { EndpointAdminBox } from "./admin.js";
import { PolicyCard } from "./policy.js";

export const LIST_LIMIT = 200; // the bridge's maximum page; patterns use the same prompts

const UNITS = { s: 1, min: 60, h: 3600, d: 86400 };

export class EndpointView {
  constructor(ctx, eid) {
    this.ctx = ctx;
    this.eid = eid;
    this.title = eid;
    this.items = new Map(); // prompt_id → <li>
    this.prompts = null;
    this.line = null;

    this.heading = h("h1", { id: "endpoint-h", tabindex: "-1" }, eid);
    this.lineEl = h("p.endpoint-line", { id: "endpoint-line" }, "Loading…");
    this.error = h("p.form-error", { role: "alert" });
    this.list = h("ol.prompt-list", { id: "prompt-list", "aria-labelledby": "prompts-h" });
    this.emptyList = h("p.empty", { hidden: true }, "No prompts yet for this endpoint.");
    this.patterns = h("div", { id: "patterns" });
    this.form = this.buildForm();
    this.info = null; // GET /api/endpoints/{eid}: keys and audit head
    this.keysCard = this.buildKeys();
    // Admin actions are built for admins only: a technician's page has none (issue 17).
    this.adminBox = ctx.me?.role === "admin" ? new EndpointAdminBox(ctx, eid) : null;
    // The effective consent policy (issue 16); its editor is built for admins only.
    this.policyCard = new PolicyCard(ctx, eid, (effective) => this.applyPolicy(effective));

    this.el = h(
      "section.view.endpoint",
      { "aria-labelledby": "endpoint-h" },
      h("nav.crumbs", { "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Fleet"), " › ", h("span", { "aria-current": "page" }, eid)),
      this.heading,
      this.lineEl,
      this.error,
      h(
        "div.columns",
        null,
        h(
          "section.col-main",
          { "aria-labelledby": "prompts-h" },
          h("h2", { id: "prompts-h" }, "Prompts ", h("span.hint", null, "(newest first)")),
          this.emptyList,
          this.list,
        ),
        h(
          "div.col-side",
          null,
          h("section.card", { "aria-labelledby": "create-h" }, h("h2", { id: "create-h" }, "New prompt"), this.form),
          this.policyCard.el,
          this.keysCard,
          this.adminBox?.el,
          h("section.card", { "aria-labelledby": "patterns-h" }, h("h2", { id: "patterns-h" }, "Patterns"), this.patterns),
        ),
      ),
    );
  }

  buildForm() {
    const f = {};
    f.title = h("input", { id: "new-title", name: "title", required: true, maxlength: "200", value: "Allow remote control?" });
    f.message = h("textarea", { id: "new-message", name: "message", maxlength: "2000", rows: "3" }, "Your technician would like to view and control this computer to fix the reported problem.");
    f.action = h("input", { id: "new-action", name: "action", required: true, maxlength: "64", list: "action-options", value: "remote_control" });
    f.expiresIn = h("input", { id: "new-expiry", name: "expires_in", type: "number", min: "1", step: "1", required: true, value: "5", inputmode: "numeric" });
    f.unit = h(
      "select",
      { id: "new-expiry-unit", name: "unit", "aria-label": "Expiry unit" },
      h("option", { value: "s" }, "seconds"),
      h("option", { value: "min", selected: true }, "minutes"),
      h("option", { value: "h" }, "hours"),
      h("option", { value: "d" }, "days"),
    );
    const radio = (value, label, checked) =>
      h("label.radio", null, h("input", { type: "radio", name: "on_no_user", value, checked }), ` ${label}`);
    // Why the technician asks, and the ticket (issue 16): shown to the user, signed, audited.
    f.reason = h("input", { id: "new-reason", name: "reason", type: "text", maxlength: "500", placeholder: "e.g. printer queue stuck" });
    f.reasonLabel = h("label", { for: "new-reason" }, "Reason");
    f.ticketId = h("input", { id: "new-ticket-id", name: "ticket_id", type: "text", maxlength: "64", placeholder: "optional" });
    f.ticketUrl = h("input", { id: "new-ticket-url", name: "ticket_url", type: "url", maxlength: "500", pattern: "https:\\/\\/.+", placeholder: "an https link (optional)", title: "an https link" });
    f.submit = h("button.primary", { type: "submit", id: "create-submit" }, "Create prompt");
    f.result = h("div.result", { id: "create-result", role: "status" });
    this.f = f;
    return h(
      "form.create-form",
      { id: "create-form", onsubmit: (ev) => this.submitCreate(ev) },
      fieldRow("new-title", "Title", f.title),
      fieldRow("new-message", "Message", f.message),
      fieldRow("new-action", "Action", f.action),
      h("div.field", null, f.reasonLabel, f.reason),
      fieldRow("new-ticket-id", "Ticket", f.ticketId),
      fieldRow("new-ticket-url", "Ticket link", f.ticketUrl),
      h(
        "datalist",
        { id: "action-options" },
        ["remote_control", "file_transfer", "run_script", "elevate", "reboot"].map((v) => h("option", { value: v })),
      ),
      h("div.field", null, h("label", { for: "new-expiry" }, "Expires after"), h("div.inline", null, f.expiresIn, f.unit)),
      h(
        "fieldset",
        { "aria-describedby": "no-user-help" },
        h("legend", null, "If no user is signed in"),
        radio("wait", "wait for a user", true),
        radio("deny", "deny"),
        radio("approve", "approve"),
        h(
          "p.hint",
          { id: "no-user-help" },
          "The endpoint has the last word when nobody is present: by default it answers deny to a prompt that asks to approve unattended (or keeps it waiting, if it is set up so).",
        ),
      ),
      f.submit,
      f.result,
    );
  }

  /** "Signing keys": the key history and the audit export (DESIGN §10). */
  buildKeys() {
    const k = {};
    k.summary = h("p.keys-summary", { id: "keys-summary" }, "Loading…");
    k.locale = h("p.hint", { id: "endpoint-locale" }); // issue 16: the language prompts are shown in
    k.list = h("ol.key-list", { id: "key-list", "aria-label": "Key history, oldest first" });
    k.head = h("p.audit-head", { id: "audit-head" });
    k.exportBtn = h("button.secondary", { type: "button", id: "export-audit", onclick: () => this.exportAudit() }, "Export audit");
    k.result = h("div.result", { id: "export-result", role: "status" });
    this.k = k;
    return h(
      "section.card.keys",
      { id: "keys-card", "aria-labelledby": "keys-h" },
      h("h2", { id: "keys-h" }, "Signing keys"),
      k.summary,
      k.locale,
      k.list,
      h("h3", { id: "audit-h" }, "Audit"),
      h(
        "p.hint",
        { id: "audit-help" },
        "The audit file holds every fact of this endpoint, hash-chained. Check it offline with ",
        h("code", null, "caisey-audit verify FILE"),
        ": it names the first line that was changed, and every answer whose signature does not hold. Note the head below: with ",
        h("code", null, "--head HASH"),
        ", the command also fails an export that does not end exactly there (rewritten, added to or cut since).",
      ),
      k.head,
      h("div.actions", null, k.exportBtn),
      k.result,
    );
  }

  renderKeys() {
    const k = this.k;
    const info = this.info;
    if (info.error) {
      setText(k.summary, `The bridge refused the endpoint's details: ${info.error.detail} (${info.error.status} ${info.error.code})`);
      return;
    }
    const now = this.ctx.now();
    const d = describeKeys(info, now);
    setText(k.summary, d.summary);
    k.summary.className = `keys-summary ${d.current ? "is-signed" : "is-unsigned"}`;
    setText(k.locale, info.locale ? `Prompts are shown in the user's language: ${info.locale} (as the agent reports it).` : "The agent reports no language: prompts are shown in English.");
    setHidden(k.list, d.keys.length === 0);
    // The audit head moves with every fact; the keys rarely do. Rebuild the list only when
    // they change, so an open "Public key" or the keyboard focus survives the polls.
    const keysSig = JSON.stringify(d.keys);
    if (keysSig !== this.keysSig) {
      this.keysSig = keysSig;
      replaceChildren(
        k.list,
        d.keys.map((key) =>
          h(
            `li.key${key.current ? ".is-current" : ""}`,
            { dataset: { keyId: key.keyId } },
            h("p.key-id", null, h("code", null, key.keyId), " ", h("span.key-label", null, key.label)),
            h("p.key-meta", null, `${key.validity} · registered by ${key.by}`),
            h("details.key-public", null, h("summary", null, "Public key"), h("code", null, key.publicKey)),
          ),
        ),
      );
    }
    const head = info.audit_head;
    replaceChildren(
      k.head,
      head && head.hash ? ["Audit head now: seq ", String(head.seq), ", hash ", h("code", { id: "audit-head-hash" }, head.hash)] : "Audit head: no facts yet",
    );
  }

  /** Fetch the audit chain with the token, then save it through a temporary link. */
  async exportAudit() {
    const k = this.k;
    const fallback = `caisey-audit-${this.eid}.jsonl`;
    k.exportBtn.disabled = true;
    showResult(k.result, { tone: "info", parts: ["Exporting the audit…"] });
    try {
      const { blob, filename } = await this.ctx.api.auditExport(this.eid);
      const name = filename || fallback;
      const read = describeAuditExport(await blob.text(), this.eid);
      if (!read.header) {
        showResult(k.result, { tone: "error", parts: [`Export failed: ${read.text}. Nothing was saved.`] });
        return;
      }
      saveBlob(blob, name);
      showResult(k.result, {
        tone: read.ok ? "ok" : "error",
        parts: [`Exported ${name} — ${read.text}. Check it with `, h("code", null, `caisey-audit verify ${name}`), "."],
      });
    } catch (exc) {
      if (exc instanceof NetworkError) {
        showResult(k.result, { tone: "error", parts: [`Export failed: ${exc.message}. Nothing was saved; press the button again to retry.`] });
      } else if (exc instanceof ApiError) {
        showResult(k.result, { tone: "error", status: exc.status, parts: [`Export refused — the bridge answered ${exc.status} ${exc.code}: ${exc.detail}`] });
      } else {
        throw exc;
      }
    } finally {
      k.exportBtn.disabled = false;
    }
  }

  async submitCreate(ev) {
    ev.preventDefault();
    const f = this.f;
    const form = ev.currentTarget;
    const body = {
      title: f.title.value,
      message: f.message.value,
      action: f.action.value.trim(),
      expires_in: Math.round(Number(f.expiresIn.value) * UNITS[f.unit.value]),
      on_no_user: form.querySelector("input[name=on_no_user]:checked").value,
    };
    if (f.reason.value.trim()) body.reason = f.reason.value.trim();
    if (f.ticketId.value.trim()) body.ticket = { id: f.ticketId.value.trim(), ...(f.ticketUrl.value.trim() ? { url: f.ticketUrl.value.trim() } : {}) };
    f.submit.disabled = true;
    try {
      const p = await createPrompt(this.ctx, this.eid, body, (r) => showResult(f.result, r));
      if (p) this.merge(p);
    } finally {
      f.submit.disabled = false;
    }
    this.ctx.refreshSoon();
  }

  /** The effective policy (issue 16): a required reason is marked; no-user choices it forbids are disabled. */
  applyPolicy(effective) {
    const f = this.f;
    const required = Boolean(effective.require_reason?.value);
    f.reason.required = required;
    setText(f.reasonLabel, required ? "Reason (required by policy)" : "Reason");
    const allowed = effective.on_no_user_allowed?.value || ["deny", "approve", "wait"];
    const radios = [...this.form.querySelectorAll("input[name=on_no_user]")];
    for (const r of radios) r.disabled = !allowed.includes(r.value);
    const checked = radios.find((r) => r.checked);
    if (!checked || checked.disabled) {
      const fallback = radios.find((r) => r.value === effective.on_no_user_default?.value) || radios.find((r) => !r.disabled);
      if (fallback) fallback.checked = true;
    }
  }

  async refresh() {
    if (this.missing) {
      // Unknown endpoint: keep the bridge check (cheap 304s), but stop asking for its prompts
      // until it shows up in the fleet.
      const fleet = await this.ctx.api.endpoints();
      this.ctx.cache.fleet = fleet.body;
      if (!fleet.body.endpoints.some((e) => e.endpoint_id === this.eid)) return;
      this.missing = false;
    }
    // The endpoint's own record (keys, audit head): a refusal of it alone is shown in its
    // card and does not hide the prompts.
    const details = this.ctx.api.endpoint(this.eid).catch((exc) => {
      if (exc instanceof ApiError && exc.code !== "unknown_endpoint" && exc.status !== 401) return { error: exc, changed: true };
      throw exc;
    });
    const [fleet, list, info] = await Promise.all([this.ctx.api.endpoints(), this.ctx.api.prompts(this.eid, LIST_LIMIT), details]);
    await this.policyCard.refresh(); // after: an unknown endpoint costs no third 404 (a 304 when unchanged)
    this.ctx.cache.fleet = fleet.body;
    this.line = fleet.body.endpoints.find((e) => e.endpoint_id === this.eid) || null;
    setText(this.error, "");
    this.renderLine();
    const zoneOf = (i) => (i?.time_zone?.name ? i.time_zone.effective : undefined); // none reported: the browser's
    const zoneBefore = zoneOf(this.info);
    if (info.changed || this.info === null || this.info.error) {
      this.info = info.error ? { error: info.error } : info.body;
      this.renderKeys();
      this.adminBox?.update(this.info);
      this.renderLine();
    }
    const zone = zoneOf(this.info); // the endpoint's local time (issue 14)
    if (list.changed || this.prompts === null || zone !== zoneBefore) {
      if (list.changed || this.prompts === null) {
        this.prompts = list.body.prompts;
        this.render();
      }
      replaceChildren(this.patterns, patternsPanel(this.eid, this.prompts, this.ctx.now(), zone));
    }
  }

  showError(exc) {
    if (exc.code === "unknown_endpoint") {
      this.missing = true;
      setText(this.lineEl, "");
    }
    setText(this.error, exc.code === "unknown_endpoint" ? `No endpoint “${this.eid}” is registered with this bridge (404 unknown_endpoint).` : `The bridge refused: ${exc.detail} (${exc.status} ${exc.code})`);
  }

  /** A prompt the bridge just answered with: show it now rather than at the next poll. */
  merge(p) {
    if (!this.prompts) return;
    const i = this.prompts.findIndex((x) => x.prompt_id === p.prompt_id);
    if (i >= 0) this.prompts[i] = p;
    else this.prompts = [p, ...this.prompts].sort((a, b) => (a.prompt_id < b.prompt_id ? 1 : -1));
    this.render();
  }

  renderLine() {
    const e = this.line;
    if (!e && this.info?.removed_at) {
      setText(this.lineEl, `Removed ${fmtTime(this.info.removed_at, this.ctx.now())} by ${this.info.removed_by} · its prompts stay readable`);
      this.lineEl.className = "endpoint-line is-removed";
      return;
    }
    if (!e) return;
    const now = this.ctx.now();
    if (e.label && this.heading.textContent !== e.label) {
      replaceChildren(this.heading, e.label, " ", h("span.eid", null, e.endpoint_id));
      this.title = e.label;
    }
    const conn = e.online ? "Online" : "Offline";
    const seen = e.online ? onlineAsOf(e, now, "connected now") : e.last_seen ? `last seen ${fmtAgo(e.last_seen, now)} (${fmtTime(e.last_seen, now)})` : "never connected";
    const where = [e.client && `client ${e.client}`, e.site && `site ${e.site}`].filter(Boolean);
    setText(this.lineEl, [conn, seen, `${e.open_prompts} open ${e.open_prompts === 1 ? "prompt" : "prompts"}`, ...where].join(" · "));
    this.lineEl.className = `endpoint-line ${e.online ? "is-online" : "is-offline"}`;
  }

  render() {
    const now = this.ctx.now();
    setHidden(this.emptyList, this.prompts.length > 0);
    syncKeyed(this.list, this.items, this.prompts, (p) => p.prompt_id, (p) => this.makeItem(p), (li, p) => this.updateItem(li, p, now));
  }

  makeItem(p) {
    const pid = p.prompt_id;
    const x = {};
    x.title = h("a.prompt-title", { href: promptHref(this.eid, pid) });
    x.action = h("code.action");
    x.state = h("p.state");
    x.detail = h("p.detail");
    x.meta = h("p.meta");
    x.cancel = h("button.secondary", { type: "button", onclick: () => this.cancel(pid, li) }, "Cancel");
    x.reissue = h("button.secondary", { type: "button", onclick: () => this.reissue(pid, li) }, "Re-issue");
    x.timeline = h("a.button-link", { href: promptHref(this.eid, pid) }, "Timeline");
    x.result = h("div.result", { role: "status" });
    const li = h(
      "li.prompt",
      { dataset: { pid } },
      h("div.prompt-head", null, h("h3", null, x.title), x.action),
      x.state,
      x.detail,
      x.meta,
      h("div.actions", null, x.timeline, x.cancel, x.reissue),
      x.result,
    );
    li._x = x;
    return li;
  }

  updateItem(li, p, now) {
    li._p = p;
    const x = li._x;
    const d = describePrompt(p, now, { online: this.line?.online });
    setText(x.title, p.title);
    setText(x.action, p.action);
    setText(x.state, d.headline);
    setText(x.detail, d.proof ? [d.detail, d.proof.short].filter(Boolean).join(" · ") : d.detail);
    li.className = `prompt tone-${d.tone}${d.live ? " is-live" : ""}`;
    setAttr(x.cancel, "aria-label", `Cancel “${p.title}”`);
    setAttr(x.reissue, "aria-label", `Re-issue “${p.title}”`);
    setAttr(x.timeline, "aria-label", `Timeline of “${p.title}”`);
    const links = [];
    if (p.supersedes) links.push("replaces an earlier prompt");
    if (p.superseded_by) links.push("replaced by a newer prompt");
    setText(x.meta, `Created ${fmtTime(p.created_at, now)} by ${p.created_by} · if no user: ${p.on_no_user}${links.length ? " · " + links.join(" · ") : ""} · ${p.prompt_id}`);
    setHidden(x.cancel, !cancellable(p));
  }

  async cancel(pid, li) {
    const btn = li._x.cancel;
    btn.disabled = true;
    try {
      const p = await cancelPrompt(this.ctx, this.eid, pid, (r) => showResult(li._x.result, r));
      if (p) this.merge(p);
    } finally {
      btn.disabled = false;
    }
    this.ctx.refreshSoon();
  }

  async reissue(pid, li) {
    const btn = li._x.reissue;
    btn.disabled = true;
    try {
      const p = await reissuePrompt(this.ctx, this.eid, pid, {}, (r) => showResult(li._x.result, r));
      if (p) this.merge(p);
    } finally {
      btn.disabled = false;
    }
    this.ctx.refreshSoon();
  }

  tick(now) {
    this.adminBox?.tick(now);
    if (!this.prompts) return;
    this.renderLine();
    // "expires in …", "no answer yet for 2 min" move with time; final prompts do not.
    for (const li of this.items.values()) if (li._p && OPEN_STATES.has(li._p.state)) this.updateItem(li, li._p, now);
  }
}

/** Save a Blob under `name`: a temporary object URL on a temporary link, clicked once. */
function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  // Revoking at once can cancel the download in some browsers; a minute is plenty.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function fieldRow(id, label, control) {
  return h("div.field", null, h("label", { for: id }, label), control);
}

/** Put an action's result in its region: tone class + text/links. */
export function showResult(el, { tone, parts, status }) {
  el.className = `result tone-${tone}`;
  setAttr(el, "data-status", status ?? null);
  const at = new Date();
  const stamp = h("time.result-time", { datetime: at.toISOString() }, `${pad2(at.getHours())}:${pad2(at.getMinutes())}:${pad2(at.getSeconds())}`);
  replaceChildren(el, stamp, " ", ...parts);
}
