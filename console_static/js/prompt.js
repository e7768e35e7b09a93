// Prompt view: one prompt's state in plain words, the proof behind its answer (signed by the
// endpoint's key, or unsigned — DESIGN §10), its facts, Cancel / Re-issue, and its timeline:
// every event with its source (console, bridge, endpoint), time and detail.

import { ApiError } from "./api.js";
import { h, setText, setHidden, replaceChildren } from "./dom.js";
import { describeDisplay, describeEvent, describePrompt, fmtClock, howWords, noUserWords } from "./describe.js";
import { cancelPrompt, cancellable, promptHref, reissuePrompt } from "./actions.js";
import { showResult } from "./endpoint.js";
import { whyParts } from "./policy.js";
import { windowWords } from "./window.js";

const UNITS = { s: 1, min: 60, h: 3600, d: 86400 };

export class PromptView {
  constructor(ctx, eid, pid) {
    this.ctx = ctx;
    this.eid = eid;
    this.pid = pid;
    this.title = "Prompt";
    this.p = null;
    this.sig = null;
    this.keys = null; // the endpoint's key history, once a signed answer needs it

    this.heading = h("h1", { id: "prompt-h", tabindex: "-1" }, "Prompt");
    this.crumb = h("span", { "aria-current": "page" }, pid);
    this.state = h("p.state.big", { id: "prompt-state" });
    this.detail = h("p.detail", { id: "prompt-detail" });
    this.proof = h("p.proof", { id: "prompt-proof", hidden: true });
    this.error = h("p.form-error", { role: "alert" });
    this.facts = h("dl.facts", { id: "prompt-facts" });
    this.timeline = h("tbody", { id: "timeline-rows" });
    this.result = h("div.result", { id: "prompt-result", role: "status" });
    this.cancelBtn = h("button.secondary", { type: "button", id: "prompt-cancel", onclick: () => this.cancel() }, "Cancel this prompt");
    this.expiry = h("input", { id: "reissue-expiry", type: "number", min: "1", step: "1", inputmode: "numeric", placeholder: "same as before" });
    this.unit = h(
      "select",
      { id: "reissue-unit", "aria-label": "Expiry unit" },
      h("option", { value: "s" }, "seconds"),
      h("option", { value: "min", selected: true }, "minutes"),
      h("option", { value: "h" }, "hours"),
    );
    this.reissueBtn = h("button.secondary", { type: "submit", id: "prompt-reissue" }, "Re-issue");
    // Escalation by hand (issue 13): a note for whoever picks it up; recorded with who.
    this.note = h("input", { id: "escalate-note", type: "text", maxlength: "500", placeholder: "optional note" });
    this.escalateBtn = h("button.secondary", { type: "submit", id: "prompt-escalate" }, "Escalate");
    this.escalations = h("p.escalations", { id: "prompt-escalations", hidden: true });
    this.why = h("p.why", { id: "prompt-why", hidden: true }); // the technician's reason and ticket (issue 16)
    // The approval window (issue 16): "access until 10:35", and the technician's Revoke.
    this.window = h("p.window", { id: "prompt-window", hidden: true });
    this.revokeBtn = h("button.secondary", { type: "button", id: "prompt-revoke", hidden: true, onclick: () => this.revoke() }, "Revoke access now");

    this.el = h(
      "section.view.prompt-view",
      { "aria-labelledby": "prompt-h" },
      h("nav.crumbs", { "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Fleet"), " › ", h("a", { href: `#/endpoint/${encodeURIComponent(eid)}` }, eid), " › ", this.crumb),
      this.heading,
      this.state,
      this.detail,
      this.why,
      this.escalations,
      this.window,
      this.proof,
      this.error,
      h(
        "div.columns",
        null,
        h(
          "section.col-main",
          { "aria-labelledby": "timeline-h" },
          h("h2", { id: "timeline-h" }, "Timeline"),
          h(
            "div.table-wrap",
            null,
            h(
              "table.timeline",
              null,
              h("caption.visually-hidden", null, "Every event of this prompt, oldest first"),
              h("thead", null, h("tr", null, h("th", { scope: "col" }, "Time"), h("th", { scope: "col" }, "Source"), h("th", { scope: "col" }, "What happened"))),
              this.timeline,
            ),
          ),
        ),
        h(
          "div.col-side",
          null,
          h(
            "section.card",
            { "aria-labelledby": "actions-h" },
            h("h2", { id: "actions-h" }, "Actions"),
            h("div.actions", null, this.cancelBtn, this.revokeBtn),
            h(
              "form.reissue-form",
              { onsubmit: (ev) => this.reissue(ev) },
              h("div.field", null, h("label", { for: "reissue-expiry" }, "Re-issue, expiring after (optional)"), h("div.inline", null, this.expiry, this.unit)),
              this.reissueBtn,
            ),
            h(
              "form.escalate-form",
              { onsubmit: (ev) => this.escalate(ev) },
              h("div.field", null, h("label", { for: "escalate-note" }, "Escalate (a note for whoever takes it over)"), this.note),
              this.escalateBtn,
            ),
            this.result,
          ),
          h("section.card", { "aria-labelledby": "facts-h" }, h("h2", { id: "facts-h" }, "Details"), this.facts),
        ),
      ),
    );
  }

  async refresh() {
    if (this.missing) {
      await this.ctx.api.endpoints(); // still tell whether the bridge answers; no repeated 404s
      return;
    }
    const res = await this.ctx.api.prompt(this.eid, this.pid);
    setText(this.error, "");
    // A signed answer: say whether its key is still the endpoint's current one (a 304 when not).
    let keysChanged = false;
    if (res.body.decision_signature) {
      try {
        const info = await this.ctx.api.endpoint(this.eid);
        keysChanged = info.changed || this.keys === null;
        this.keys = info.body.keys || [];
      } catch (exc) {
        if (!(exc instanceof ApiError)) throw exc; // only the wording of one detail depends on it
      }
    }
    const sig = JSON.stringify(res.body);
    if (sig !== this.sig || keysChanged) {
      this.sig = sig;
      this.p = res.body;
      this.render();
    }
  }

  showError(exc) {
    if (exc.code === "unknown_prompt" || exc.code === "unknown_endpoint") this.missing = true;
    const what = exc.code === "unknown_prompt" ? `No prompt ${this.pid} on endpoint ${this.eid} (404 unknown_prompt).` : exc.code === "unknown_endpoint" ? `No endpoint “${this.eid}” is registered (404 unknown_endpoint).` : `The bridge refused: ${exc.detail} (${exc.status} ${exc.code})`;
    setText(this.error, what);
  }

  render() {
    const p = this.p;
    const now = this.ctx.now();
    this.title = p.title;
    document.title = `${p.title} — Caisey console`;
    setText(this.heading, p.title);
    setText(this.crumb, p.title);
    this.tick(now);
    setHidden(this.cancelBtn, !cancellable(p));
    this.renderFacts(now);
    const why = whyParts(p);
    setHidden(this.why, why.length === 0);
    replaceChildren(this.why, why.map(([k, v], i) => [i ? " · " : "", `${k}: `, v]));
    const esc = p.escalations || [];
    setHidden(this.escalations, esc.length === 0);
    setText(
      this.escalations,
      esc.length
        ? `Escalated ${esc.length === 1 ? "" : `${esc.length} times `}— ` +
            esc.map((e) => `${fmtClock(e.at, now)} ${e.auto ? `by the bridge: ${e.reason}` : `by ${e.by}`}${e.note ? ` (“${e.note}”)` : ""}`).join("; ")
        : "",
    );
    replaceChildren(
      this.timeline,
      (p.events || []).map((e) => {
        const d = describeEvent(e, now);
        return h(
          "tr",
          { class: `ev src-${e.source}`, dataset: { type: e.type, source: e.source } },
          h("td.ev-time", null, h("time", { datetime: e.time, title: e.time }, fmtClock(e.time, now))),
          h("td.ev-source", null, h(`span.badge.src-${e.source}`, null, d.who)),
          h("td.ev-what", null, d.what, " ", h("code.ev-type", null, e.type)),
        );
      }),
    );
  }

  renderFacts(now) {
    const p = this.p;
    const d = p.delivery || {};
    const link = (pid) => h("a", { href: promptHref(this.eid, pid) }, pid);
    const rows = [
      ["Action", h("code", null, p.action)],
      ["Message", p.message || "—"],
      ...whyParts(p),
      p.on_locked && ["If the screen is locked", p.on_locked === "wait" ? "wait until unlocked" : "answer as if no user"],
      p.brand_name && ["Shown under the brand", p.brand_name],
      ["Created", `${fmtClock(p.created_at, now)} by ${p.created_by}`],
      ["Expires", fmtClock(p.expires_at, now)],
      ["If no user", noUserWords(p.on_no_user)],
      ["Delivery attempts", String(d.attempts ?? 0) + (d.replays ? ` (${d.replays} replayed)` : "")],
      d.last_attempt_at && ["Last attempt", fmtClock(d.last_attempt_at, now)],
      d.next_attempt_at && ["Next attempt", fmtClock(d.next_attempt_at, now)],
      d.last_error && ["Last error", d.last_error],
      ["Received by endpoint", d.received_at ? fmtClock(d.received_at, now) : "not yet"],
      ["Seen by user", d.acknowledged_at ? fmtClock(d.acknowledged_at, now) : "not yet"],
      p.decision && ["Answer", `${p.decision}, ${howWords(p.decided_how)}`],
      (p.state === "approved" || p.state === "denied") && ["Signature", signatureFact(p, this.keys, now)],
      describeDisplay(p, now) && ["Shown", describeDisplay(p, now)],
      p.display && p.display.shown_text != null && ["Text shown", shownTextFact(p.display)],
      p.decided_at && ["Answered at", fmtClock(p.decided_at, now)],
      p.synced_at && ["Reached the bridge", fmtClock(p.synced_at, now)],
      p.late_decision && ["Late answer (ignored)", `${p.late_decision.decision}, made ${fmtClock(p.late_decision.decided_at, now)}, arrived ${fmtClock(p.late_decision.synced_at, now)} — ${p.late_decision.why}`],
      p.final_at && ["Final since", fmtClock(p.final_at, now) + (p.provisional ? " (provisional)" : "")],
      p.reason && ["Reason", p.reason],
      p.cancelled_by && ["Withdrawn by", p.cancelled_by],
      p.supersedes && ["Replaces", link(p.supersedes)],
      p.superseded_by && ["Replaced by", link(p.superseded_by)],
      p.adopted && ["Recovered", "rebuilt from the endpoint's own copy (the bridge had lost its record)"],
      ["Prompt id", h("code", null, p.prompt_id)],
    ].filter(Boolean);
    replaceChildren(this.facts, rows.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
  }

  async cancel() {
    this.cancelBtn.disabled = true;
    try {
      const p = await cancelPrompt(this.ctx, this.eid, this.pid, (r) => showResult(this.result, r));
      if (p) this.ctx.refreshSoon();
    } finally {
      this.cancelBtn.disabled = false;
    }
  }

  async revoke() {
    this.revokeBtn.disabled = true;
    try {
      const res = await this.ctx.api.revokeWindow(this.eid, this.pid);
      const w = res.body.window;
      showResult(this.result, { tone: "ok", parts: [`Access revoked — the bridge answered 200 OK; ${windowWords(w, this.ctx.now()).text}. The endpoint is told.`] });
      this.ctx.refreshSoon();
    } catch (exc) {
      if (!(exc instanceof ApiError)) {
        showResult(this.result, { tone: "error", parts: [`Revoke failed: could not reach the bridge (${exc.message}). Press the button again.`] });
        return;
      }
      showResult(this.result, { tone: "error", parts: [`Revoke refused — the bridge answered ${exc.status} ${exc.code}: ${exc.detail}`] });
      this.ctx.refreshSoon();
    } finally {
      this.revokeBtn.disabled = false;
    }
  }

  async escalate(ev) {
    ev.preventDefault();
    this.escalateBtn.disabled = true;
    try {
      const res = await this.ctx.api.escalate(this.eid, this.pid, this.note.value.trim());
      this.note.value = "";
      showResult(this.result, { tone: "ok", parts: [`Escalated — the bridge answered 200 OK; recorded as escalated by ${res.body.escalations.at(-1).by}.`] });
      this.ctx.refreshSoon();
    } catch (exc) {
      if (!(exc instanceof ApiError)) {
        showResult(this.result, { tone: "error", parts: [`Escalate failed: could not reach the bridge (${exc.message}). Press the button again.`] });
        return;
      }
      showResult(this.result, { tone: "error", parts: [`Escalate refused — the bridge answered ${exc.status} ${exc.code}: ${exc.detail}`] });
    } finally {
      this.escalateBtn.disabled = false;
    }
  }

  async reissue(ev) {
    ev.preventDefault();
    const overrides = {};
    if (this.expiry.value) overrides.expires_in = Math.round(Number(this.expiry.value) * UNITS[this.unit.value]);
    this.reissueBtn.disabled = true;
    try {
      await reissuePrompt(this.ctx, this.eid, this.pid, overrides, (r) => showResult(this.result, r));
    } finally {
      this.reissueBtn.disabled = false;
    }
    this.ctx.refreshSoon();
  }

  tick(now) {
    if (!this.p) return;
    const d = describePrompt(this.p, now, { online: this.ctx.cache.fleet?.endpoints.find((e) => e.endpoint_id === this.eid)?.online });
    setText(this.state, d.headline);
    setText(this.detail, d.detail);
    this.state.className = `state big tone-${d.tone}`;
    const w = windowWords(this.p.window, now);
    setHidden(this.window, !w);
    setHidden(this.revokeBtn, !w || !w.revocable);
    if (w) {
      setText(this.window, w.text);
      this.window.className = `window tone-${w.tone}`;
    }
    setHidden(this.proof, !d.proof);
    if (d.proof) {
      setText(this.proof, d.proof.text);
      this.proof.className = `proof ${d.proof.signed ? "is-signed" : "is-unsigned"}`;
    }
  }
}

/** The exact text the endpoint showed (signed with the answer), its language and template. */
function shownTextFact(d) {
  const meta = [d.presenter, d.locale, d.template_id && `template ${d.template_id} v${d.template_version}`].filter(Boolean).join(", ");
  return [h("pre.shown-text", null, d.shown_text), h("small", null, `${meta} — SHA-256 ${String(d.shown_sha256).slice(0, 16)}…`)];
}

/** The details' "Signature" row: the full key id and where it stands now, or why there is none. */
function signatureFact(p, keys, now) {
  const sig = p.decision_signature;
  if (sig && sig.key_id) {
    const key = (keys || []).find((k) => k.key_id === sig.key_id);
    let standing = "";
    if (key && !key.valid_until) standing = "; it is the endpoint's current key";
    else if (key) standing = `; a re-enrollment retired it at ${fmtClock(key.valid_until, now)} (it was the current key when this answer was recorded)`;
    return ["Ed25519 by the endpoint key ", h("code", null, sig.key_id), `, verified by the bridge before it recorded the answer${standing}`];
  }
  return "none — recorded unsigned (before signing, or the endpoint has no key)";
}
