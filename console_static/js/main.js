// The console's shell: session, routing, the one poll loop, the freshness line and the
// "bridge unreachable" banner. Views (fleet, endpoint, prompt) fetch and render; this
// module decides when, and says loudly when it cannot.

import { Api, ApiError, NetworkError } from "./api.js";
import { h, setText, setHidden, replaceChildren } from "./dom.js";
import { fmtClock, fmtDuration } from "./describe.js";
import { FleetView } from "./fleet.js";
import { EndpointView } from "./endpoint.js";
import { PromptView } from "./prompt.js";
import { WebhooksView } from "./webhooks.js";
import { PatternsView } from "./fleet_patterns.js";
import { forgetPendingKeys } from "./actions.js";
import { AddEndpointView, TokensView } from "./admin.js";

const TOKEN_KEY = "caisey.token";
const POLL_MS = 2_000; // a live prompt's change shows within one poll (R7)
const HIDDEN_POLL_MS = 15_000;
const BACKOFF_BASE_MS = 1_000;
const BACKOFF_CAP_MS = 10_000;

const $ = (id) => document.getElementById(id);

const shell = {
  api: null,
  me: null, // GET /api/whoami: {name, role, clients}; admin actions exist only for role admin
  view: null,
  clockOffsetMs: 0,
  lastOkAt: null, // browser time of the last answer from the bridge (a 304 counts)
  failures: 0,
  failingSince: null,
  lastError: "",
  nextTryAt: null,
  timer: null,
  running: false,
  again: false,
  // Data shared across views (the fleet line for the endpoint header).
  cache: { fleet: null },
};

/** Bridge time: what `expires_at`, `decided_at` etc. are measured against. */
export function now() {
  return Date.now() + shell.clockOffsetMs;
}

function ctx() {
  return { api: shell.api, me: shell.me, now, navigate, cache: shell.cache, refreshSoon, signOut };
}

// --- session -----------------------------------------------------------------------------------

function signedIn() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function makeApi(token) {
  return new Api({
    token,
    onUnauthorized: () => signOut("The bridge no longer accepts this token (revoked or wrong). Sign in again."),
    onClock: (offset) => {
      // Ignore sub-second noise from the Date header's resolution; follow real skew.
      shell.clockOffsetMs = Math.abs(offset) > 1_500 ? Math.round(offset) : 0;
    },
  });
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  forgetPendingKeys();
  stopPolling();
  shell.api = null;
  shell.me = null;
  renderNav();
  shell.cache.fleet = null;
  shell.view?.destroy?.();
  shell.view = null;
  showSignIn(message);
}

function showSignIn(message = "") {
  document.body.classList.add("signed-out");
  setHidden($("signout"), true);
  setHidden($("topnav"), true);
  setHidden($("banner"), true);
  setText($("freshness"), "");
  document.title = "Sign in — Caisey console";
  const status = h("p.form-error", { id: "signin-error", role: "alert" }, message);
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "token-help signin-error",
  });
  const button = h("button.primary", { type: "submit" }, "Sign in");
  const form = h(
    "form.card.signin",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const token = input.value.trim();
        if (!token) return;
        button.disabled = true;
        setText(status, "Checking the token…");
        const api = makeApi(token);
        api.onUnauthorized = () => {};
        try {
          await api.whoami();
        } catch (exc) {
          button.disabled = false;
          if (exc instanceof ApiError) setText(status, `Not accepted: ${exc.detail || exc.code} (${exc.status} ${exc.code}).`);
          else setText(status, `Cannot reach the bridge at ${location.origin}: ${exc.message}. Is it running?`);
          input.focus();
          return;
        }
        sessionStorage.setItem(TOKEN_KEY, token);
        start(token, api);
      },
    },
    h("h1", { tabindex: "-1" }, "Sign in"),
    h("p", null, "Paste your technician token. It is kept for this browser tab only and cleared when you sign out or close the tab."),
    h("label", { for: "token" }, "Technician token"),
    input,
    h("p.hint", { id: "token-help" }, "An administrator creates one on the console's Tokens page (or with POST /api/tokens)."),
    button,
    status,
  );
  replaceChildren($("main"), form);
  input.focus();
}

function start(token, api = makeApi(token)) {
  document.body.classList.remove("signed-out");
  shell.api = api;
  api.onUnauthorized = () => signOut("The bridge no longer accepts this token (revoked or wrong). Sign in again.");
  setHidden($("signout"), false);
  shell.me = null; // learnt by the first poll (GET /api/whoami), then the page is built
  replaceChildren($("main"), h("p.loading", null, "Loading…"));
  refreshSoon();
}

/** The top navigation, for the caller's role: technicians never see admin pages. (The
 *  brand links to the fleet, as every page's breadcrumb does.) */
function renderNav() {
  const nav = $("topnav");
  const me = shell.me;
  setHidden(nav, !me);
  document.body.classList.toggle("role-admin", me?.role === "admin");
  setText($("whoami"), me ? `${me.name} · ${me.role}${me.clients ? " · " + me.clients.join(", ") : ""}` : "");
  if (!me) {
    replaceChildren(nav);
    return;
  }
  const link = (href, text, id) => h("a", { href, id }, text);
  replaceChildren(
    nav,
    link("#/patterns", "Patterns", "nav-patterns"),
    link("#/add", "Add endpoint", "nav-add"),
    me.role === "admin" ? link("#/tokens", "Tokens", "nav-tokens") : null,
    me.role === "admin" ? link("#/webhooks", "Webhooks", "nav-webhooks") : null,
  );
}

// --- routing -----------------------------------------------------------------------------------

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "endpoint" && parts[1] && parts[2] === "prompt" && parts[3]) return { name: "prompt", eid: parts[1], pid: parts[3] };
  if (parts[0] === "endpoint" && parts[1]) return { name: "endpoint", eid: parts[1] };
  if (parts[0] === "add") return { name: "add" };
  if (parts[0] === "tokens") return { name: "tokens" };
  if (parts[0] === "webhooks") return { name: "webhooks" };
  if (parts[0] === "patterns") return { name: "patterns" };
  return { name: "fleet" };
}

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  if (!shell.api || !shell.me) return;
  const r = parseRoute();
  shell.view?.destroy?.();
  const c = ctx();
  if (r.name === "prompt") shell.view = new PromptView(c, r.eid, r.pid);
  else if (r.name === "endpoint") shell.view = new EndpointView(c, r.eid);
  else if (r.name === "add") shell.view = new AddEndpointView(c);
  else if (r.name === "tokens" && shell.me.role === "admin") shell.view = new TokensView(c);
  else if (r.name === "webhooks" && shell.me.role === "admin") shell.view = new WebhooksView(c);
  else if (r.name === "patterns") shell.view = new PatternsView(c);
  else shell.view = new FleetView(c);
  replaceChildren($("main"), shell.view.el);
  document.title = `${shell.view.title} — Caisey console`;
  // Move focus to the new view's heading so keyboard and screen-reader users land there.
  shell.view.el.querySelector("h1")?.focus({ preventScroll: true });
  window.scrollTo(0, 0);
  refreshSoon();
}

// --- polling -----------------------------------------------------------------------------------

function refreshSoon() {
  schedule(0);
}

function schedule(delayMs) {
  clearTimeout(shell.timer);
  shell.nextTryAt = Date.now() + delayMs;
  shell.timer = setTimeout(tick, delayMs);
}

function stopPolling() {
  clearTimeout(shell.timer);
  shell.timer = null;
}

async function tick() {
  if (!shell.api) return;
  if (!shell.me) return whoami();
  if (!shell.view) return;
  if (shell.running) {
    shell.again = true;
    return;
  }
  shell.running = true;
  const view = shell.view;
  let delay = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
  let bug = null;
  try {
    await view.refresh();
    onReachable();
  } catch (exc) {
    if (exc instanceof NetworkError) {
      delay = onUnreachable(exc);
    } else if (exc instanceof ApiError) {
      onReachable(); // the bridge answered; the view shows the refusal itself
      if (exc.status !== 401) view.showError?.(exc);
    } else {
      bug = exc;
    }
  } finally {
    shell.running = false;
  }
  if (!shell.api) return; // signed out meanwhile
  if (shell.again) {
    shell.again = false;
    delay = 0;
  }
  schedule(delay); // keep polling even after a bug, so the page never goes silently stale
  renderStatus();
  if (bug) throw bug; // …but let it reach the browser console (and the tests)
}

/** Before the first page: who is this token? (A 401 signs out; no answer shows the banner.) */
async function whoami() {
  if (shell.running) return;
  shell.running = true;
  let delay = null;
  try {
    shell.me = (await shell.api.whoami()).body;
    onReachable();
  } catch (exc) {
    if (exc instanceof NetworkError) delay = onUnreachable(exc);
    else if (!(exc instanceof ApiError)) throw exc;
    // A bridge without /api/whoami (older): least privilege, no admin actions.
    else if (exc.status !== 401) shell.me = { name: "", role: "technician", clients: null };
  } finally {
    shell.running = false;
  }
  if (!shell.api) return;
  if (shell.me) {
    renderNav();
    route();
  } else if (delay !== null) {
    schedule(delay);
  }
  renderStatus();
}

function onReachable() {
  const wasFailing = shell.failures > 0;
  shell.failures = 0;
  shell.failingSince = null;
  shell.lastOkAt = Date.now();
  document.body.classList.remove("stale");
  if (wasFailing) {
    setText($("banner-msg"), "");
    setHidden($("banner"), true);
    announce("Bridge reachable again; data is current.");
  }
}

function onUnreachable(exc) {
  shell.failures += 1;
  shell.failingSince ??= Date.now();
  shell.lastError = exc.message;
  document.body.classList.add("stale");
  if (shell.failures === 1) {
    setHidden($("banner"), false);
    setText($("banner-msg"), "Bridge unreachable — retrying");
  }
  // Full jitter within the upper half, so the banner's countdown is never "0 s" forever.
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (shell.failures - 1));
  return Math.round(ceiling * (0.5 + Math.random() / 2));
}

function announce(text) {
  const el = $("announcer");
  el.textContent = "";
  setTimeout(() => (el.textContent = text), 50);
}

/** Once a second: the freshness line, the banner's countdown, and time-based view text. */
function renderStatus() {
  if (!shell.api) return;
  const age = shell.lastOkAt === null ? null : Date.now() - shell.lastOkAt;
  let text;
  if (age === null) text = shell.failures ? "No data yet — bridge unreachable" : "Loading…";
  else if (shell.failures) text = `Data ${fmtDuration(age)} old (from ${fmtClock(new Date(shell.lastOkAt).toISOString())}) — bridge unreachable`;
  else if (age < 5_000) text = "Live · updated just now";
  else text = `Updated ${fmtDuration(age)} ago`;
  setText($("freshness"), text);
  $("freshness").classList.toggle("is-stale", shell.failures > 0 || (age !== null && age > 3 * POLL_MS + 5_000));
  if (shell.failures) {
    const wait = Math.max(0, Math.ceil((shell.nextTryAt - Date.now()) / 1000));
    const since = fmtDuration(Date.now() - shell.failingSince);
    const shown = shell.lastOkAt === null ? "nothing loaded yet" : `the page shows data from ${fmtClock(new Date(shell.lastOkAt).toISOString())}`;
    setText(
      $("banner-detail"),
      `${shell.running ? "Trying now" : `Next try in ${wait} s`} · ${shell.failures} failed ${shell.failures === 1 ? "try" : "tries"} over ${since} · ${shown}. (${shell.lastError})`,
    );
  }
  shell.view?.tick?.(now());
}

// --- boot --------------------------------------------------------------------------------------

function boot() {
  $("signout").addEventListener("click", () => signOut("Signed out."));
  $("retry-now").addEventListener("click", () => refreshSoon());
  window.addEventListener("hashchange", route);
  window.addEventListener("online", () => refreshSoon());
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshSoon();
  });
  setInterval(renderStatus, 1_000);
  const token = signedIn();
  if (token) start(token);
  else showSignIn();
}

boot();
