// Consent policies (issue 16, DESIGN §13) on the endpoint page: the effective policy, each
// value with where it comes from (this endpoint, its site, its client, the deployment default),
// and — built for admins only — an editor for the endpoint's, its site's and its client's
// policy. Every action is a documented API call (GET/PUT/DELETE …/policy); the bridge enforces
// the policy on every create, whatever the console shows.

import { ApiError } from "./api.js";
import { h, setText, setHidden, replaceChildren } from "./dom.js";

export const FIELDS = [
  ["expires_in_default", "Default expiry"],
  ["expires_in_max", "Longest expiry"],
  ["on_no_user_allowed", "Allowed if no user"],
  ["on_no_user_default", "Default if no user"],
  ["escalate_after", "Escalate after"],
  ["require_reason", "Reason required"],
  ["on_locked", "Locked screen"],
  ["brand_name", "Brand name"],
  ["brand_logo_png", "Brand logo"],
];
const SOURCE_WORDS = { endpoint: "set on this endpoint", site: "from its site", client: "from its client", default: "deployment default" };
const NO_USER = ["deny", "approve", "wait"];
const enc = encodeURIComponent;

/** "300" → "5 min"; seconds in the largest unit that divides them. */
export function secondsWords(s) {
  if (s === null || s === undefined) return "none";
  for (const [unit, n] of [["d", 86400], ["h", 3600], ["min", 60]]) if (s >= n && s % n === 0) return `${s / n} ${unit}`;
  return `${s} s`;
}

export function valueWords(field, value) {
  if (value === null || value === undefined) return field === "on_locked" ? "the endpoint decides" : "none";
  if (field === "expires_in_default" || field === "expires_in_max" || field === "escalate_after") return secondsWords(value);
  if (field === "on_no_user_allowed") return value.join(", ");
  if (field === "require_reason") return value ? "yes" : "no";
  if (field === "on_locked") return value === "wait" ? "wait until unlocked" : "answer as if no user";
  if (field === "brand_logo_png") return `a PNG (${Math.round((value.length * 3) / 4 / 1024)} KiB)`;
  return String(value);
}

export class PolicyCard {
  /** `onEffective(effective)` is told the effective policy whenever it is read (the create form uses it). */
  constructor(ctx, eid, onEffective) {
    this.ctx = ctx;
    this.eid = eid;
    this.onEffective = onEffective;
    this.sig = null;
    this.where = { client: null, site: null };
    this.table = h("tbody", { id: "policy-rows" });
    this.status = h("p.hint", { id: "policy-status" }, "Loading…");
    this.editor = ctx.me?.role === "admin" ? this.buildEditor() : null;
    this.el = h(
      "section.card.policy",
      { id: "policy-card", "aria-labelledby": "policy-h" },
      h("h2", { id: "policy-h" }, "Consent policy"),
      this.status,
      h(
        "table.policy-table",
        null,
        h("caption.visually-hidden", null, "The effective policy: each value and where it comes from"),
        h("thead", null, h("tr", null, h("th", { scope: "col" }, "Rule"), h("th", { scope: "col" }, "Value"), h("th", { scope: "col" }, "Where from"))),
        this.table,
      ),
      this.editor?.el,
    );
  }

  async refresh() {
    let res;
    try {
      res = await this.ctx.api.get(`/api/endpoints/${enc(this.eid)}/policy`, { poll: true });
    } catch (exc) {
      if (exc instanceof ApiError && exc.status !== 401) {
        setText(this.status, `The bridge refused the policy: ${exc.detail} (${exc.status} ${exc.code})`);
        return;
      }
      throw exc;
    }
    const sig = JSON.stringify(res.body);
    if (sig === this.sig) return;
    this.sig = sig;
    const { effective, client, site } = res.body;
    this.where = { client, site };
    setText(this.status, "Each rule comes from the most specific level that sets it: this endpoint, then its site, then its client, then the deployment.");
    replaceChildren(
      this.table,
      FIELDS.map(([field, label]) => {
        const e = effective[field];
        return h(
          "tr",
          { dataset: { field, source: e.source } },
          h("th", { scope: "row" }, label),
          h("td.policy-value", null, valueWords(field, e.value), e.note ? h("span.hint", null, ` (${e.note})`) : null),
          h("td.policy-source", null, SOURCE_WORDS[e.source] || e.source),
        );
      }),
    );
    this.editor?.levels(client, site);
    this.onEffective?.(effective);
  }

  // --- the admin's editor ---------------------------------------------------------------------

  buildEditor() {
    const e = {};
    e.level = h("select", { id: "policy-level", onchange: () => this.load() });
    e.number = (id) => h("input", { id, type: "number", min: "5", step: "1", inputmode: "numeric", placeholder: "inherit" });
    e.expiresDefault = e.number("policy-expires-default");
    e.expiresMax = e.number("policy-expires-max");
    e.escalate = e.number("policy-escalate");
    e.allowed = NO_USER.map((v) => h("input", { type: "checkbox", value: v, id: `policy-allow-${v}` }));
    const choice = (id, options) => h("select", { id }, h("option", { value: "" }, "inherit"), options.map(([v, t]) => h("option", { value: v }, t)));
    e.noUserDefault = choice("policy-no-user-default", NO_USER.map((v) => [v, v]));
    e.requireReason = choice("policy-require-reason", [["true", "yes"], ["false", "no"]]);
    e.onLocked = choice("policy-on-locked", [["wait", "wait until unlocked"], ["no_user", "answer as if no user"]]);
    e.brandName = h("input", { id: "policy-brand-name", type: "text", maxlength: "64", placeholder: "inherit" });
    e.logo = h("input", { id: "policy-brand-logo", type: "file", accept: "image/png" });
    e.dropLogo = h("input", { id: "policy-drop-logo", type: "checkbox" });
    e.brandRows = h(
      "div.policy-brand",
      null,
      row("policy-brand-name", "Brand name (per client)", e.brandName),
      row("policy-brand-logo", "Brand logo, PNG (per client)", e.logo),
      h("label.radio", null, e.dropLogo, " remove the logo"),
    );
    e.save = h("button.primary", { type: "submit", id: "policy-save" }, "Save policy");
    e.clear = h("button.secondary", { type: "button", id: "policy-clear", onclick: () => this.clear() }, "Clear this level");
    e.result = h("div.result", { id: "policy-result", role: "status" });
    e.levels = (client, site) => {
      const options = [["endpoint", "this endpoint"]];
      if (client && site) options.push(["site", `site ${site} of ${client}`]);
      if (client) options.push(["client", `client ${client}`]);
      const sig = JSON.stringify(options);
      if (sig === e.levelsSig) return;
      e.levelsSig = sig;
      const before = e.level.value;
      replaceChildren(e.level, options.map(([v, t]) => h("option", { value: v }, t)));
      if (options.some(([v]) => v === before)) e.level.value = before;
      this.load();
    };
    e.el = h(
      "form.policy-editor",
      { id: "policy-editor", onsubmit: (ev) => this.save(ev) },
      h("h3", null, "Edit a policy (admin)"),
      row("policy-level", "Level", e.level),
      h("p.hint", null, "Seconds; an empty field is inherited from the next level."),
      row("policy-expires-default", "Default expiry (s)", e.expiresDefault),
      row("policy-expires-max", "Longest expiry (s)", e.expiresMax),
      row("policy-escalate", "Escalate after (s)", e.escalate),
      h("fieldset", null, h("legend", null, "Allowed if no user (none ticked: inherit)"), e.allowed.map((box) => h("label.radio", null, box, ` ${box.value}`))),
      row("policy-no-user-default", "Default if no user", e.noUserDefault),
      row("policy-require-reason", "Reason required", e.requireReason),
      row("policy-on-locked", "Locked screen", e.onLocked),
      e.brandRows,
      h("div.actions", null, e.save, e.clear),
      e.result,
    );
    return e;
  }

  levelPath() {
    const { client, site } = this.where;
    const level = this.editor.level.value;
    if (level === "client") return `/api/clients/${enc(client)}/policy`;
    if (level === "site") return `/api/clients/${enc(client)}/sites/${enc(site)}/policy`;
    return `/api/endpoints/${enc(this.eid)}/policy`;
  }

  /** Fill the editor with what the chosen level sets now. */
  async load() {
    const e = this.editor;
    setHidden(e.brandRows, e.level.value !== "client");
    let policy = {};
    try {
      if (e.level.value === "endpoint") {
        // GET …/endpoints/{eid}/policy answers the effective policy; the level itself is listed.
        const res = await this.ctx.api.get("/api/policies");
        policy = res.body.policies.find((l) => l.level === "endpoint" && l.endpoint_id === this.eid)?.policy || {};
      } else {
        policy = (await this.ctx.api.get(this.levelPath())).body.policy;
      }
    } catch (exc) {
      if (!(exc instanceof ApiError) || exc.code !== "unknown_policy") report(e.result, "error", `Could not read the policy: ${exc.message}`);
    }
    e.loaded = policy;
    e.expiresDefault.value = policy.expires_in_default ?? "";
    e.expiresMax.value = policy.expires_in_max ?? "";
    e.escalate.value = policy.escalate_after ?? "";
    for (const box of e.allowed) box.checked = (policy.on_no_user_allowed || []).includes(box.value);
    e.noUserDefault.value = policy.on_no_user_default ?? "";
    e.requireReason.value = policy.require_reason === undefined ? "" : String(policy.require_reason);
    e.onLocked.value = policy.on_locked ?? "";
    e.brandName.value = policy.brand_name ?? "";
    e.logo.value = "";
    e.dropLogo.checked = false;
  }

  async body() {
    const e = this.editor;
    const body = {};
    const num = (input) => (input.value === "" ? undefined : Math.round(Number(input.value)));
    body.expires_in_default = num(e.expiresDefault);
    body.expires_in_max = num(e.expiresMax);
    body.escalate_after = num(e.escalate);
    const allowed = e.allowed.filter((box) => box.checked).map((box) => box.value);
    if (allowed.length) body.on_no_user_allowed = allowed;
    if (e.noUserDefault.value) body.on_no_user_default = e.noUserDefault.value;
    if (e.requireReason.value) body.require_reason = e.requireReason.value === "true";
    if (e.onLocked.value) body.on_locked = e.onLocked.value;
    if (e.level.value === "client") {
      if (e.brandName.value.trim()) body.brand_name = e.brandName.value.trim();
      const file = e.logo.files && e.logo.files[0];
      if (file) body.brand_logo_png = await base64Of(file);
      else if (e.loaded?.brand_logo_png && !e.dropLogo.checked) body.brand_logo_png = e.loaded.brand_logo_png;
    }
    for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
    return body;
  }

  async save(ev) {
    ev.preventDefault();
    const e = this.editor;
    e.save.disabled = true;
    try {
      const body = await this.body();
      await this.ctx.api.request("PUT", this.levelPath(), { body });
      report(e.result, "ok", "Saved — the bridge answered 200 OK. New prompts follow it.");
      this.sig = null;
      await this.refresh();
      await this.load();
    } catch (exc) {
      if (!(exc instanceof ApiError)) report(e.result, "error", `Save failed: ${exc.message}. Press the button again.`);
      else report(e.result, "error", `Save refused — the bridge answered ${exc.status} ${exc.code}: ${exc.detail}`);
    } finally {
      e.save.disabled = false;
    }
  }

  async clear() {
    const e = this.editor;
    e.clear.disabled = true;
    try {
      await this.ctx.api.request("DELETE", this.levelPath());
      report(e.result, "ok", "Cleared — the bridge answered 200 OK; this level now inherits every rule.");
      this.sig = null;
      await this.refresh();
      await this.load();
    } catch (exc) {
      if (exc instanceof ApiError && exc.code === "unknown_policy") report(e.result, "info", "This level sets nothing: there was nothing to clear.");
      else if (exc instanceof ApiError) report(e.result, "error", `Clear refused — the bridge answered ${exc.status} ${exc.code}: ${exc.detail}`);
      else report(e.result, "error", `Clear failed: ${exc.message}. Press the button again.`);
    } finally {
      e.clear.disabled = false;
    }
  }
}

function row(id, label, control) {
  return h("div.field", null, h("label", { for: id }, label), control);
}

function report(el, tone, text) {
  el.className = `result tone-${tone}`;
  setText(el, text);
}

/** A file's bytes as base64 (no data: prefix). */
function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** The prompt's "Why" and ticket, as the console shows them: the ticket is a link only for an
 *  https URL (anything else is shown as text); everything goes in as text nodes, never HTML. */
export function whyParts(p) {
  const parts = [];
  if (p.request_reason) parts.push(["Why", p.request_reason]);
  if (p.ticket) {
    const url = p.ticket.url;
    const safe = typeof url === "string" && /^https:\/\/[!-~]+$/.test(url);
    parts.push([
      "Ticket",
      safe ? h("a", { href: url, rel: "noopener noreferrer", target: "_blank", class: "ticket-link" }, p.ticket.id) : url ? `${p.ticket.id} (${url})` : p.ticket.id,
    ]);
  }
  return parts;
}
