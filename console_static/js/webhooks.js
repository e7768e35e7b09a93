// Webhooks view (admin; issue 13, DESIGN §11): the subscriptions with their delivery log,
// a form to add one — its signing secret is shown once, right after, and never again —,
// and Test / Delete per subscription. A technician token is refused by the bridge (403),
// and the view says so.

import { ApiError } from "./api.js";
import { h, setText, replaceChildren } from "./dom.js";
import { fmtClock } from "./describe.js";
import { showResult } from "./endpoint.js";

const EVENTS = ["prompt.created", "prompt.delivered", "prompt.final", "prompt.escalated", "endpoint.offline", "endpoint.online", "window.started", "window.ended", "window.revoked"];

export class WebhooksView {
  constructor(ctx) {
    this.ctx = ctx;
    this.title = "Webhooks";
    this.sig = null;
    this.heading = h("h1", { id: "webhooks-h", tabindex: "-1" }, "Webhooks");
    this.error = h("p.form-error", { role: "alert" });
    this.rows = h("tbody", { id: "webhook-rows" });
    this.result = h("div.result", { id: "webhook-result", role: "status" });
    this.secret = h("div.secret-once", { id: "webhook-secret", hidden: true });
    this.url = h("input", { id: "webhook-url", type: "url", required: true, placeholder: "e.g. psa.example.com/hooks/caisey, with https" });
    this.description = h("input", { id: "webhook-description", type: "text", maxlength: "200", placeholder: "optional" });
    this.boxes = EVENTS.map((e) => h("input", { type: "checkbox", value: e, id: `ev-${e}`, checked: e.startsWith("prompt.") }));
    this.el = h(
      "section.view.webhooks-view",
      { "aria-labelledby": "webhooks-h" },
      h("nav.crumbs", { "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Fleet"), " › ", h("span", { "aria-current": "page" }, "Webhooks")),
      this.heading,
      h("p.detail", null, "Events go to each URL signed (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature) and are retried for 24 h until it answers 2xx; 410 Gone disables the subscription."),
      this.error,
      h(
        "div.columns",
        null,
        h(
          "section.col-main",
          { "aria-labelledby": "subs-h" },
          h("h2", { id: "subs-h" }, "Subscriptions"),
          h(
            "div.table-wrap",
            null,
            h(
              "table.webhooks",
              null,
              h("thead", null, h("tr", null, ...["URL", "Events", "Last delivery", "Counts", ""].map((t) => h("th", { scope: "col" }, t)))),
              this.rows,
            ),
          ),
        ),
        h(
          "div.col-side",
          null,
          h(
            "form.card.webhook-form",
            { onsubmit: (ev) => this.create(ev) },
            h("h2", null, "Add a webhook"),
            h("div.field", null, h("label", { for: "webhook-url" }, "URL (https)"), this.url),
            h("div.field", null, h("label", { for: "webhook-description" }, "Description"), this.description),
            h("fieldset", null, h("legend", null, "Events"), ...this.boxes.map((b) => h("label.check", null, b, " ", b.value))),
            h("button.primary", { type: "submit", id: "webhook-create" }, "Add webhook"),
            this.secret,
            this.result,
          ),
        ),
      ),
    );
  }

  async refresh() {
    const res = await this.ctx.api.webhooks();
    setText(this.error, "");
    const sig = JSON.stringify(res.body);
    if (sig === this.sig) return;
    this.sig = sig;
    const now = this.ctx.now();
    const hooks = res.body.webhooks || [];
    replaceChildren(
      this.rows,
      hooks.length ? hooks.map((w) => this.row(w, now)) : h("tr", null, h("td", { colspan: "5" }, "No webhooks yet.")),
    );
  }

  row(w, now) {
    const d = w.delivery || {};
    const last = d.last_outcome
      ? `${d.last_outcome}${d.last_status ? ` (HTTP ${d.last_status})` : ""} · ${d.last_type || ""}${d.last_attempt_at ? ` · ${fmtClock(d.last_attempt_at, now)}` : ""}` +
        (d.attempts ? ` · attempt ${d.attempts}` : "") +
        (d.next_attempt_at ? ` · next try ${fmtClock(d.next_attempt_at, now)}` : "") +
        (d.last_error ? ` · ${d.last_error}` : "")
      : "nothing sent yet";
    return h(
      "tr",
      { dataset: { id: w.id }, class: w.enabled ? "" : "disabled" },
      h("td", null, h("code", null, w.url), w.description ? h("div.hint", null, w.description) : null, w.enabled ? null : h("div.form-error", null, `Disabled: ${w.disabled_reason}`)),
      h("td", null, w.events.join(", ")),
      h("td.webhook-last", null, last),
      h("td", null, `${d.delivered} delivered · ${d.failed_attempts} failed attempts · ${d.given_up} given up`),
      h(
        "td.actions",
        null,
        h("button.secondary", { type: "button", onclick: () => this.test(w) }, "Test"),
        " ",
        h("button.secondary", { type: "button", onclick: () => this.remove(w) }, "Delete"),
      ),
    );
  }

  showError(exc) {
    setText(this.error, exc.status === 403 ? "Only an admin token can see and change webhooks (403 forbidden)." : `The bridge refused: ${exc.detail} (${exc.status} ${exc.code})`);
  }

  async act(label, call) {
    showResult(this.result, { tone: "info", parts: [`${label}…`] });
    try {
      const res = await call();
      this.sig = null;
      this.ctx.refreshSoon();
      return res;
    } catch (exc) {
      if (exc instanceof ApiError) showResult(this.result, { tone: "error", parts: [`${label} refused — the bridge answered ${exc.status} ${exc.code}: ${exc.detail}`] });
      else showResult(this.result, { tone: "error", parts: [`${label} failed: could not reach the bridge (${exc.message}).`] });
      return null;
    }
  }

  async create(ev) {
    ev.preventDefault();
    const body = { url: this.url.value.trim(), events: this.boxes.filter((b) => b.checked).map((b) => b.value) };
    if (this.description.value.trim()) body.description = this.description.value.trim();
    const res = await this.act("Add webhook", () => this.ctx.api.createWebhook(body));
    if (!res) return;
    this.url.value = "";
    this.description.value = "";
    // The secret is shown this once: the bridge never answers it again.
    replaceChildren(this.secret, h("p", null, "Signing secret — copy it now, it is not shown again:"), h("code", { id: "secret" }, res.body.secret));
    this.secret.hidden = false;
    showResult(this.result, { tone: "ok", parts: [`Added ${res.body.id} — the bridge answered 201 Created.`] });
  }

  async test(w) {
    const res = await this.act(`Test ${w.id}`, () => this.ctx.api.testWebhook(w.id));
    if (!res) return;
    const b = res.body;
    showResult(this.result, {
      tone: b.delivered ? "ok" : "error",
      parts: [b.delivered ? `Test event ${b.webhook_id} delivered (HTTP ${b.status}).` : `Test event ${b.webhook_id} not delivered: ${b.error}.`],
    });
  }

  async remove(w) {
    const res = await this.act(`Delete ${w.id}`, () => this.ctx.api.deleteWebhook(w.id));
    if (res) showResult(this.result, { tone: "ok", parts: [`Deleted ${w.id}.`] });
  }
}
