// Administration (issue 17): add an endpoint with a ready-to-paste install, manage named
// tokens, and the endpoint page's admin box (relabel, move, re-issue enrollment, remove).
//
// Role-aware: the shell learns the caller from GET /api/whoami and passes it as `ctx.me`;
// admin actions are not built at all for a technician (not merely hidden). Every action is a
// documented API call, and every refusal is said in plain words (`plainError`).

import { ApiError, NetworkError } from "./api.js";
import { h, setText, setHidden, replaceChildren } from "./dom.js";
import { fmtAgo, fmtTime } from "./describe.js";

const PACKAGE_KEY = "caisey.agentPackage";
const DEFAULT_PACKAGE = "caisey[agent] @ git+https://github.com/YOUR-ORG/caisey.git";
const ID_PATTERN = "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}";
// Used as an HTML pattern (compiled with the v flag: parentheses and '-' escaped in classes).
const CLIENT_PATTERN = "[A-Za-z0-9](?:[A-Za-z0-9 ._&'\\(\\)\\-]{0,62}[A-Za-z0-9._&'\\(\\)\\-])?";

const PLAIN = {
  missing_token: "You are not signed in.",
  invalid_token: "The bridge no longer accepts your token (revoked or wrong).",
  forbidden: "This needs an administrator's token.",
  unknown_endpoint: "No such endpoint (or not one of your clients').",
  endpoint_id_conflict: "That endpoint id is already taken. Choose another.",
  endpoint_quota_exceeded: "This bridge has reached its endpoint limit. An administrator can raise it.",
  client_out_of_scope: "Your token may only add endpoints for your own clients.",
  client_mismatch: "That endpoint belongs to another client. An administrator can move it from its page.",
  site_mismatch: "That endpoint is at another site. An administrator can move it from its page.",
  endpoint_removed: "This endpoint was removed. Its prompts stay readable; nothing new can be made for it.",
  token_exists: "A token with that name exists (names ignore case). Revoke it first or choose another name.",
  reserved_name: "That name is reserved. Choose another.",
  unknown_token: "That token no longer exists (someone revoked it already).",
};

/** A refusal or failure in plain words, with the bridge's own words and code after it. */
export function plainError(exc) {
  if (exc instanceof NetworkError) return `Could not reach the bridge (${exc.message}). Nothing was changed; try again.`;
  if (exc instanceof ApiError) {
    const lead = PLAIN[exc.code];
    const own = exc.detail ? `${exc.detail}` : "";
    return lead ? `${lead} (${own ? own + " — " : ""}${exc.status} ${exc.code})` : `The bridge refused: ${own} (${exc.status} ${exc.code})`;
  }
  return String(exc && exc.message ? exc.message : exc);
}

function say(el, tone, ...parts) {
  el.className = `result tone-${tone}`;
  replaceChildren(el, ...parts);
}

function field(id, label, control, hint) {
  return h("div.field", null, h("label", { for: id }, label), control, hint ? h("p.hint", { id: `${id}-hint` }, hint) : null);
}

/** A button that copies `text()` to the clipboard and says so (falls back to selecting it). */
export function copyButton(text, label, target) {
  const status = h("span.copy-status", { role: "status" });
  const button = h(
    "button.secondary.copy",
    {
      type: "button",
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(text());
          setText(status, "Copied.");
        } catch {
          if (target) {
            const range = document.createRange();
            range.selectNodeContents(target);
            getSelection().removeAllRanges();
            getSelection().addRange(range);
          }
          setText(status, "Selected — press Ctrl+C (⌘C) to copy.");
        }
        setTimeout(() => setText(status, ""), 4000);
      },
    },
    label,
  );
  return h("span.copy-wrap", null, button, " ", status);
}

function fmtLeft(ms) {
  if (ms <= 0) return "expired";
  const s = Math.floor(ms / 1000);
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  return `${hh} h ${String(mm).padStart(2, "0")} min ${String(ss).padStart(2, "0")} s`;
}

function shQuote(s) {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function psQuote(s) {
  return `'${s.replace(/'/g, "''")}'`;
}

/** The install steps per OS for `token`, using this bridge's own URL. */
export function installSteps(token, pkg, origin = location.origin) {
  const bridge = shQuote(origin);
  const pipx = `python3 -m pip install --user pipx && python3 -m pipx ensurepath\npipx install ${shQuote(pkg)}`;
  const enroll = `caisey-agent enroll --bridge ${bridge} --token-file - <<'CAISEY_TOKEN'\n${token}\nCAISEY_TOKEN`;
  const unit = [
    "mkdir -p ~/.config/systemd/user",
    "cat > ~/.config/systemd/user/caisey-agent.service <<'UNIT'",
    "[Unit]",
    "Description=Caisey endpoint agent (remote-support approval prompts)",
    "After=graphical-session.target",
    "PartOf=graphical-session.target",
    "[Service]",
    "ExecStart=%h/.local/bin/caisey-agent run --presenter auto",
    "Restart=always",
    "RestartSec=5",
    "KillMode=mixed",
    "UMask=0077",
    "NoNewPrivileges=yes",
    "[Install]",
    "WantedBy=graphical-session.target",
    "UNIT",
    "systemctl --user daemon-reload",
    "systemctl --user enable --now caisey-agent.service",
  ].join("\n");
  const plist = [
    "mkdir -p ~/Library/LaunchAgents ~/Library/Logs",
    "cat > ~/Library/LaunchAgents/com.caisey.agent.plist <<PLIST",
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    '<plist version="1.0"><dict>',
    "  <key>Label</key><string>com.caisey.agent</string>",
    "  <key>ProgramArguments</key><array><string>$(command -v caisey-agent)</string><string>run</string><string>--presenter</string><string>tk</string></array>",
    "  <key>RunAtLoad</key><true/><key>KeepAlive</key><true/>",
    "  <key>ProcessType</key><string>Interactive</string>",
    "  <key>StandardErrorPath</key><string>$HOME/Library/Logs/caisey-agent.log</string>",
    "</dict></plist>",
    "PLIST",
    "launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/com.caisey.agent.plist",
  ].join("\n");
  const win = {
    install: `py -m pip install --user pipx; py -m pipx ensurepath\npipx install ${psQuote(pkg)}`,
    enroll: `${psQuote(token)} | caisey-agent enroll --bridge ${psQuote(origin)} --token-file -`,
    service: [
      "$action = New-ScheduledTaskAction -Execute (Get-Command caisey-agent).Source -Argument 'run --presenter tk'",
      "$trigger = New-ScheduledTaskTrigger -AtLogOn -User $env:USERNAME",
      "Register-ScheduledTask -TaskName 'Caisey agent' -Action $action -Trigger $trigger -RunLevel Limited",
      "Start-ScheduledTask -TaskName 'Caisey agent'",
    ].join("\n"),
  };
  return [
    { os: "linux", title: "Linux (bash, systemd user service)", steps: { install: pipx, enroll, service: unit } },
    { os: "macos", title: "macOS (zsh or bash, launchd LaunchAgent)", steps: { install: pipx, enroll, service: plist } },
    { os: "windows", title: "Windows (PowerShell, Task Scheduler at log on)", steps: win },
  ];
}

const STEP_TITLES = {
  install: "1. Install the agent (Python 3.11+ and pipx)",
  enroll: "2. Enroll — the token goes in on standard input, never on the command line",
  service: "3. Start it with the session",
};

/**
 * The answer to an enrollment: the one-time token with its expiry counting down, and the
 * copy-ready steps. Returns {el, tick(now)}.
 */
export function enrollmentPanel(ctx, answer, { rekey = false } = {}) {
  const pkgInput = h("input", {
    id: "agent-package",
    value: localStorage.getItem(PACKAGE_KEY) || DEFAULT_PACKAGE,
    spellcheck: "false",
    autocomplete: "off",
    "aria-describedby": "agent-package-hint",
  });
  const tokenCode = h("code.secret", { id: "enrollment-token" }, answer.enrollment_token);
  const countdown = h("span.countdown", { id: "enrollment-expiry" });
  const stepsEl = h("div.install-steps", { id: "install-steps" });
  const expiresMs = Date.parse(answer.expires_at);

  const renderSteps = () => {
    const pkg = pkgInput.value.trim() || DEFAULT_PACKAGE;
    const groups = installSteps(answer.enrollment_token, pkg);
    replaceChildren(
      stepsEl,
      groups.map((g) =>
        h(
          "section.os-steps",
          { "aria-labelledby": `os-${g.os}`, dataset: { os: g.os } },
          h("h3", { id: `os-${g.os}` }, g.title),
          Object.entries(g.steps).map(([step, text]) => {
            const pre = h("pre.cmd", { dataset: { step }, tabindex: "0", "aria-label": `${g.title}: ${STEP_TITLES[step]}` }, text);
            return h("div.step", null, h("p.step-title", null, STEP_TITLES[step], " ", copyButton(() => text, `Copy`, pre)), pre);
          }),
        ),
      ),
    );
  };
  pkgInput.addEventListener("change", () => {
    localStorage.setItem(PACKAGE_KEY, pkgInput.value.trim());
    renderSteps();
  });
  renderSteps();

  const el = h(
    "section.card.enrollment",
    { id: "enrollment-panel", "aria-labelledby": "enrollment-h" },
    h("h2", { id: "enrollment-h", tabindex: "-1" }, rekey ? `New enrollment for ${answer.endpoint_id}` : `Install the agent on ${answer.endpoint_id}`),
    h("p", null, "One-time enrollment token (it works once; keep it out of chat and tickets):"),
    h("p.token-line", null, tokenCode, " ", copyButton(() => answer.enrollment_token, "Copy token", tokenCode)),
    h("p", null, "Expires in ", countdown, ` (at ${fmtTime(answer.expires_at, ctx.now())}).`),
    field("agent-package", "Agent package (what pipx installs; remembered in this browser)", pkgInput, "Your organisation's copy of the Caisey repository, or a path to a checkout: see agent/INSTALL.md."),
    h(
      "p.hint",
      null,
      "Run these on the endpoint as the user who will see the prompts. The bridge URL is this console's own: ",
      h("code", null, location.origin),
      ". The service steps follow agent/INSTALL.md (systemd user unit, LaunchAgent, Task Scheduler).",
    ),
    stepsEl,
  );
  const tick = (now) => setText(countdown, fmtLeft(expiresMs - now));
  tick(ctx.now());
  return { el, tick };
}

// --- Add endpoint ------------------------------------------------------------------------------

export class AddEndpointView {
  constructor(ctx) {
    this.ctx = ctx;
    this.title = "Add endpoint";
    this.panel = null;
    const me = ctx.me || {};
    const scoped = Array.isArray(me.clients);
    this.f = {
      eid: h("input", { id: "add-eid", name: "endpoint_id", required: true, pattern: ID_PATTERN, maxlength: "64", autocomplete: "off", spellcheck: "false", "aria-describedby": "add-eid-hint" }),
      label: h("input", { id: "add-label", name: "label", maxlength: "128", autocomplete: "off" }),
      client: scoped
        ? h("select", { id: "add-client", name: "client", required: true }, me.clients.map((c) => h("option", { value: c }, c)))
        : h("input", { id: "add-client", name: "client", pattern: CLIENT_PATTERN, maxlength: "64", list: "known-clients", autocomplete: "off", "aria-describedby": "add-client-hint" }),
      site: h("input", { id: "add-site", name: "site", pattern: CLIENT_PATTERN, maxlength: "64", autocomplete: "off" }),
      submit: h("button.primary", { type: "submit", id: "add-submit" }, "Create enrollment"),
      result: h("div.result", { id: "add-result", role: "status" }),
    };
    this.known = h("datalist", { id: "known-clients" });
    this.out = h("div", { id: "add-out" });
    const f = this.f;
    this.el = h(
      "section.view.add-endpoint",
      { "aria-labelledby": "add-h" },
      h("nav.crumbs", { "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Fleet"), " › ", h("span", { "aria-current": "page" }, "Add endpoint")),
      h("h1", { id: "add-h", tabindex: "-1" }, "Add endpoint"),
      h(
        "form.card.add-form",
        { id: "add-form", onsubmit: (ev) => this.submit(ev) },
        field("add-eid", "Endpoint id", f.eid, "1–64 letters, digits, '.', '_' or '-'; unique on this bridge (case ignored). Usually the machine's name."),
        field("add-label", "Label (what technicians see)", f.label),
        field("add-client", scoped ? "Client" : "Client (optional)", f.client, scoped ? null : "The customer it belongs to. Technicians scoped to clients see only their clients' endpoints."),
        this.known,
        field("add-site", "Site (optional)", f.site),
        f.submit,
        f.result,
      ),
      this.out,
    );
  }

  async submit(ev) {
    ev.preventDefault();
    const f = this.f;
    const body = { endpoint_id: f.eid.value.trim(), label: f.label.value.trim() };
    if (f.client.value.trim()) body.client = f.client.value.trim();
    if (f.site.value.trim()) body.site = f.site.value.trim();
    f.submit.disabled = true;
    say(f.result, "info", "Creating the enrollment…");
    try {
      const res = await this.ctx.api.enroll(body);
      say(f.result, "ok", "Enrollment created. The endpoint shows in the fleet as waiting for its agent until the agent first connects.");
      this.panel = enrollmentPanel(this.ctx, res.body);
      replaceChildren(this.out, this.panel.el, h("p", null, h("a", { href: `#/endpoint/${encodeURIComponent(res.body.endpoint_id)}` }, `Open ${res.body.endpoint_id}`), " · ", h("a", { href: "#/" }, "Back to the fleet")));
      this.panel.el.querySelector("h2")?.focus();
    } catch (exc) {
      if (!(exc instanceof ApiError) && !(exc instanceof NetworkError)) throw exc;
      say(f.result, "error", plainError(exc));
      f.eid.focus();
    } finally {
      f.submit.disabled = false;
    }
  }

  async refresh() {
    // Known clients for the datalist (and a cheap proof the token still works: a 401 signs out).
    const fleet = await this.ctx.api.endpoints();
    const clients = [...new Set(fleet.body.endpoints.map((e) => e.client).filter(Boolean))].sort();
    if (clients.join("\n") !== this.knownSig) {
      this.knownSig = clients.join("\n");
      replaceChildren(this.known, clients.map((c) => h("option", { value: c })));
    }
  }

  showError(exc) {
    say(this.f.result, "error", plainError(exc));
  }

  tick(now) {
    this.panel?.tick(now);
  }
}

// --- Tokens ------------------------------------------------------------------------------------

export class TokensView {
  constructor(ctx) {
    this.ctx = ctx;
    this.title = "Tokens";
    this.data = null;
    const f = {
      name: h("input", { id: "tok-name", name: "name", required: true, maxlength: "64", pattern: "[A-Za-z0-9][A-Za-z0-9._@\\-]{0,63}", autocomplete: "off", spellcheck: "false" }),
      role: h("select", { id: "tok-role", name: "role", onchange: () => setHidden(this.clientsField, f.role.value !== "technician") }, h("option", { value: "technician" }, "technician"), h("option", { value: "admin" }, "admin")),
      clients: h("input", { id: "tok-clients", name: "clients", autocomplete: "off", "aria-describedby": "tok-clients-hint" }),
      submit: h("button.primary", { type: "submit", id: "tok-submit" }, "Create token"),
      result: h("div.result", { id: "tok-result", role: "status" }),
    };
    this.f = f;
    this.clientsField = field("tok-clients", "Clients (optional, comma-separated)", f.clients, "Leave empty for a technician who works for every client. With clients, the token sees and acts on those clients' endpoints only.");
    this.secretOut = h("div", { id: "tok-secret" });
    this.error = h("p.form-error", { role: "alert" });
    this.tbody = h("tbody", { id: "token-rows" });
    this.empty = h("p.empty", { hidden: true }, "No named tokens yet. The built-in admin token is not listed.");
    this.el = h(
      "section.view.tokens",
      { "aria-labelledby": "tokens-h" },
      h("nav.crumbs", { "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Fleet"), " › ", h("span", { "aria-current": "page" }, "Tokens")),
      h("h1", { id: "tokens-h", tabindex: "-1" }, "Tokens"),
      this.error,
      h(
        "form.card.token-form",
        { id: "token-form", onsubmit: (ev) => this.create(ev) },
        h("h2", null, "New token"),
        field("tok-name", "Name (who holds it, e.g. sam or sam@example.com)", f.name),
        field("tok-role", "Role", f.role),
        this.clientsField,
        f.submit,
        f.result,
        this.secretOut,
      ),
      h(
        "div.table-wrap",
        null,
        h(
          "table.token-table",
          null,
          h("caption", null, "Named tokens"),
          h(
            "thead",
            null,
            h("tr", null, ["Name", "Role", "Clients", "Created", "Last used", "Actions"].map((t) => h("th", { scope: "col" }, t))),
          ),
          this.tbody,
        ),
      ),
      this.empty,
    );
  }

  async refresh() {
    const res = await this.ctx.api.tokens();
    setText(this.error, "");
    this.data = res.body.tokens;
    this.render(); // compares with what is shown: a poll that changed nothing touches nothing
  }

  showError(exc) {
    setText(this.error, plainError(exc));
  }

  render() {
    const now = this.ctx.now();
    setHidden(this.empty, this.data.length > 0);
    // Rows are rebuilt only when the list changed, and never under an open confirmation
    // (the next poll after it closes catches up).
    const sig = JSON.stringify(this.data);
    if (sig === this.sig || this.tbody.querySelector(".confirm:not([hidden])")) return;
    this.sig = sig;
    replaceChildren(
      this.tbody,
      this.data.map((t) => {
        const confirm = h("div.confirm", { hidden: true, role: "group", "aria-label": `Confirm revoking ${t.name}` });
        const revoke = h("button.secondary.danger", { type: "button", "aria-label": `Revoke ${t.name}`, onclick: () => this.askRevoke(t, confirm, revoke) }, "Revoke");
        return h(
          "tr",
          { dataset: { name: t.name } },
          h("td", { "data-label": "Name" }, h("strong", null, t.name), this.ctx.me?.name === t.name ? h("span.hint", null, " (you)") : null),
          h("td", { "data-label": "Role" }, t.role),
          h("td", { "data-label": "Clients" }, t.clients ? t.clients.join(", ") : h("span.hint", null, "all")),
          h("td", { "data-label": "Created" }, h("time", { datetime: t.created_at, title: t.created_at }, fmtTime(t.created_at, now)), h("span.hint", null, ` by ${t.created_by}`)),
          h("td", { "data-label": "Last used" }, t.last_used ? h("time", { datetime: t.last_used, title: fmtTime(t.last_used, now) }, fmtAgo(t.last_used, now)) : h("span.hint", null, "never")),
          h("td", { "data-label": "Actions" }, revoke, confirm),
        );
      }),
    );
  }

  askRevoke(t, confirm, revoke) {
    const yes = h("button.primary.danger", { type: "button", onclick: () => this.revoke(t, confirm) }, `Revoke ${t.name}`);
    const no = h("button.secondary", { type: "button", onclick: () => { setHidden(confirm, true); revoke.focus(); } }, "Keep it");
    const mine = this.ctx.me?.name === t.name;
    replaceChildren(
      confirm,
      h("p", null, `Revoke the token “${t.name}”? Its holder is refused from the next request on${mine ? " — this is the token you are signed in with: you will be signed out" : ""}. This cannot be undone.`),
      yes,
      " ",
      no,
      h("div.result", { role: "status" }),
    );
    confirm.onkeydown = (ev) => {
      if (ev.key === "Escape") no.click();
    };
    setHidden(confirm, false);
    yes.focus();
  }

  async revoke(t, confirm) {
    const out = confirm.querySelector(".result");
    try {
      await this.ctx.api.revokeToken(t.name);
    } catch (exc) {
      if (!(exc instanceof ApiError) && !(exc instanceof NetworkError)) throw exc;
      if (!(exc instanceof ApiError && exc.code === "unknown_token")) {
        say(out, "error", plainError(exc));
        return;
      }
    }
    if (this.ctx.me?.name === t.name) {
      this.ctx.signOut(`You revoked the token “${t.name}” you were signed in with. Sign in with another token.`);
      return;
    }
    setHidden(confirm, true);
    say(this.f.result, "ok", `Token “${t.name}” revoked.`);
    this.f.name.focus();
    this.ctx.refreshSoon();
  }

  async create(ev) {
    ev.preventDefault();
    const f = this.f;
    const body = { name: f.name.value.trim(), role: f.role.value };
    const clients = f.clients.value.split(",").map((c) => c.trim()).filter(Boolean);
    if (body.role === "technician" && clients.length) body.clients = clients;
    f.submit.disabled = true;
    replaceChildren(this.secretOut);
    say(f.result, "info", "Creating the token…");
    try {
      const res = await this.ctx.api.createToken(body);
      const t = res.body;
      const secret = h("code.secret", { id: "new-token-secret" }, t.token);
      say(f.result, "ok", `Token “${t.name}” created (${t.role}${t.clients ? ", clients " + t.clients.join(", ") : ""}).`);
      replaceChildren(
        this.secretOut,
        h(
          "div.secret-box",
          { role: "group", "aria-labelledby": "new-token-h" },
          h("p", { id: "new-token-h" }, h("strong", null, "Copy this token now: it will not be shown again."), " Give it to its holder over a safe channel; the bridge keeps only its hash."),
          h("p.token-line", null, secret, " ", copyButton(() => t.token, "Copy token", secret)),
          h("button.secondary", { type: "button", onclick: () => replaceChildren(this.secretOut) }, "Done — hide it"),
        ),
      );
      this.secretOut.querySelector("button.copy")?.focus();
      f.name.value = "";
      f.clients.value = "";
      this.ctx.refreshSoon();
    } catch (exc) {
      if (!(exc instanceof ApiError) && !(exc instanceof NetworkError)) throw exc;
      say(f.result, "error", plainError(exc));
      f.name.focus();
    } finally {
      f.submit.disabled = false;
    }
  }

  tick() {}
}

// --- the endpoint page's admin box -------------------------------------------------------------

/** Relabel, move, re-issue enrollment, remove; `update(info)` after each GET of the endpoint. */
export class EndpointAdminBox {
  constructor(ctx, eid) {
    this.ctx = ctx;
    this.eid = eid;
    this.info = null;
    this.panel = null;
    const f = {
      label: h("input", { id: "adm-label", maxlength: "128", autocomplete: "off" }),
      client: h("input", { id: "adm-client", pattern: CLIENT_PATTERN, maxlength: "64", autocomplete: "off" }),
      site: h("input", { id: "adm-site", pattern: CLIENT_PATTERN, maxlength: "64", autocomplete: "off" }),
      save: h("button.primary", { type: "submit", id: "adm-save" }, "Save"),
      result: h("div.result", { id: "adm-result", role: "status" }),
      rekey: h("button.secondary", { type: "button", id: "adm-rekey", onclick: () => this.askRekey() }, "Re-issue enrollment"),
      remove: h("button.secondary.danger", { type: "button", id: "adm-remove", onclick: () => this.askRemove() }, "Remove endpoint"),
      confirm: h("div.confirm", { id: "adm-confirm", hidden: true, role: "group" }),
      out: h("div", { id: "adm-out" }),
      removed: h("p.removed-note", { id: "adm-removed", hidden: true }),
    };
    this.f = f;
    this.form = h(
      "form",
      { id: "adm-form", onsubmit: (ev) => this.save(ev), oninput: () => (this.dirty = true) },
      field("adm-label", "Label", f.label),
      field("adm-client", "Client (empty: none)", f.client),
      field("adm-site", "Site (empty: none)", f.site),
      f.save,
    );
    this.el = h(
      "section.card.admin-box",
      { id: "admin-box", "aria-labelledby": "admin-h" },
      h("h2", { id: "admin-h" }, "Administration"),
      f.removed,
      this.form,
      h("div.actions", null, f.rekey, f.remove),
      f.confirm,
      f.result,
      f.out,
    );
  }

  /** New endpoint details (GET /api/endpoints/{eid}); the form follows unless being edited. */
  update(info) {
    if (!info || info.error) return;
    this.info = info;
    const f = this.f;
    if (!this.form.contains(document.activeElement) && !this.dirty) {
      f.label.value = info.label || "";
      f.client.value = info.client || "";
      f.site.value = info.site || "";
    }
    const removed = !!info.removed_at;
    setHidden(f.removed, !removed);
    if (removed) setText(f.removed, `Removed ${fmtTime(info.removed_at, this.ctx.now())} by ${info.removed_by}. Its prompts stay readable; its agent is refused.`);
    for (const el of [this.form, f.rekey, f.remove]) setHidden(el, removed);
  }

  async save(ev) {
    ev.preventDefault();
    const f = this.f;
    const body = {};
    const now = { label: f.label.value.trim(), client: f.client.value.trim() || null, site: f.site.value.trim() || null };
    for (const k of Object.keys(now)) if (now[k] !== (this.info?.[k] ?? (k === "label" ? "" : null))) body[k] = now[k];
    if (!Object.keys(body).length) {
      say(f.result, "info", "Nothing changed.");
      return;
    }
    f.save.disabled = true;
    try {
      const res = await this.ctx.api.updateEndpoint(this.eid, body);
      this.dirty = false;
      this.update(res.body);
      say(f.result, "ok", `Saved: ${Object.keys(body).join(", ")}. The change is recorded in the endpoint's audit chain.`);
      this.ctx.refreshSoon();
    } catch (exc) {
      if (!(exc instanceof ApiError) && !(exc instanceof NetworkError)) throw exc;
      say(f.result, "error", plainError(exc));
    } finally {
      f.save.disabled = false;
    }
  }

  confirm(text, yesLabel, onYes, back) {
    const f = this.f;
    const yes = h("button.primary.danger", { type: "button", onclick: async () => { setHidden(f.confirm, true); await onYes(); } }, yesLabel);
    const no = h("button.secondary", { type: "button", onclick: () => { setHidden(f.confirm, true); back.focus(); } }, "Cancel");
    replaceChildren(f.confirm, h("p", null, text), yes, " ", no);
    // (A handler property returning false would cancel the key: Enter must still press buttons.)
    f.confirm.onkeydown = (ev) => {
      if (ev.key === "Escape") no.click();
    };
    setHidden(f.confirm, false);
    yes.focus();
  }

  askRekey() {
    const hasAgent = !!this.info?.enrolled_at;
    const text = hasAgent
      ? `Re-issue the enrollment of “${this.eid}”? Once the new token is used, the current agent is refused and its signing key retired. Use this when the endpoint's agent was lost or reinstalled.`
      : `Issue a new enrollment token for “${this.eid}”? Its agent has not enrolled yet; earlier tokens stay valid until they expire.`;
    this.confirm(text, "Re-issue enrollment", () => this.rekey(), this.f.rekey);
  }

  async rekey() {
    const f = this.f;
    try {
      const res = await this.ctx.api.enroll({ endpoint_id: this.eid, label: this.info?.label || "" });
      this.panel = enrollmentPanel(this.ctx, res.body, { rekey: true });
      replaceChildren(f.out, this.panel.el);
      say(f.result, "ok", "New enrollment token issued. Install the agent with the steps below.");
      this.panel.el.querySelector("h2")?.focus();
    } catch (exc) {
      if (!(exc instanceof ApiError) && !(exc instanceof NetworkError)) throw exc;
      say(f.result, "error", plainError(exc));
    }
  }

  askRemove() {
    this.confirm(
      `Remove the endpoint “${this.eid}”? Its open prompts are cancelled, its agent is refused from now on, and nothing new can be made for it. Its prompts and audit chain stay readable. This cannot be undone.`,
      `Remove ${this.eid}`,
      () => this.remove(),
      this.f.remove,
    );
  }

  async remove() {
    const f = this.f;
    try {
      const res = await this.ctx.api.removeEndpoint(this.eid);
      this.update(res.body);
      replaceChildren(f.out);
      say(f.result, "ok", `Endpoint “${this.eid}” removed. It no longer shows in the fleet (unless removed endpoints are shown).`);
      this.ctx.refreshSoon();
    } catch (exc) {
      if (!(exc instanceof ApiError) && !(exc instanceof NetworkError)) throw exc;
      say(f.result, "error", plainError(exc));
    }
  }

  tick(now) {
    this.panel?.tick(now);
  }
}
