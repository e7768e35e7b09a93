// Plain words for prompt states, outcomes and timeline events (DESIGN §3, §4), and for the
// proof behind an answer: the endpoint key that signed it, the endpoint's own cap on
// unattended answers, refused signatures and the endpoint's key history (DESIGN §10).
//
// Pure functions of (prompt object from the API, now in bridge time): no DOM, no fetch,
// so the tests can call them directly with crafted prompts. `now` is bridge time (the
// console corrects its clock by the offset it measures from the bridge's Date header).

import { windowEventWords } from "./window.js";

/** R7: past this, a live prompt may be *described* as unanswered; only expires_at ends it. */
export const NO_ANSWER_NOTICE_MS = 90_000;
/** Show "(synced …)" only when the answer reached the bridge this much after it was made. */
export const SYNC_LAG_NOTICE_MS = 60_000;

const t = (iso) => (iso ? Date.parse(iso) : null);

export function pad2(n) {
  return String(n).padStart(2, "0");
}

/** "10:04" today; "Nov 25 10:04" on another day. */
export function fmtTime(iso, now = Date.now()) {
  if (!iso) return "—";
  const d = new Date(iso);
  const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  return sameDay(d, new Date(now)) ? hm : `${d.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${hm}`;
}

/** "10:04:05" today; with the date otherwise. For timelines. */
export function fmtClock(iso, now = Date.now()) {
  if (!iso) return "—";
  const d = new Date(iso);
  const hms = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  return sameDay(d, new Date(now)) ? hms : `${d.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${hms}`;
}

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/** 4_000 → "4 s", 300_000 → "5 min", 7_500_000 → "2 h 5 min", 3 days → "3 d". */
export function fmtDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const min = Math.round(s / 60);
  if (min < 60) return `${min} min`;
  const hours = Math.floor(s / 3600);
  if (hours < 48) {
    const rest = Math.round((s - hours * 3600) / 60);
    return rest ? `${hours} h ${rest} min` : `${hours} h`;
  }
  return `${Math.round(s / 86400)} d`;
}

/** "just now", "3 min ago", "never". */
export function fmtAgo(iso, now = Date.now()) {
  if (!iso) return "never";
  const ms = now - Date.parse(iso);
  if (ms < 5_000) return "just now";
  return `${fmtDuration(ms)} ago`;
}

// An online endpoint's line is as old as its checked_at: on Cloudflare an idle endpoint's
// bridge object looks at its agent only every few minutes (a dead agent shows offline within
// about 7 min). Say so instead of "now" once the line is over a minute and a half old.
export function onlineAsOf(e, now, fresh) {
  const age = e.checked_at ? now - Date.parse(e.checked_at) : 0;
  return age > 90_000 ? `online as of ${fmtAgo(e.checked_at, now)}` : fresh;
}

const PROVISIONAL_NOTE = "provisional: a late answer made in time will still count";
const DECISION_WORD = { approve: "Approved", deny: "Denied" };

/** Tone (for colour and icon) of each state; every tone also has words, never colour alone. */
export const TONE = {
  pending: "live",
  delivered: "live",
  acknowledged: "live",
  approved: "ok",
  denied: "no",
  expired: "missed",
  failed_to_deliver: "failed",
  cancelled: "withdrawn",
  superseded: "withdrawn",
};

export const OPEN_STATES = new Set(["pending", "delivered", "acknowledged"]);

/**
 * The console's sentence for a prompt: `{headline, detail, tone, live}`.
 * `ctx.online` (optional) is the endpoint's connection, to explain a pending prompt.
 */
export function describePrompt(p, now = Date.now(), ctx = {}) {
  const tone = TONE[p.state] || "live";
  const live = OPEN_STATES.has(p.state);
  const expiresAt = t(p.expires_at);
  const d = p.delivery || {};
  const late = p.late_decision;
  const lateWord = late ? `'${late.decision}'` : "";
  let headline = p.state;
  const detail = [];

  const expiryNote = () => {
    const left = expiresAt - now;
    return left > 0 ? `expires ${fmtTime(p.expires_at, now)} (in ${fmtDuration(left)})` : `expires ${fmtTime(p.expires_at, now)}`;
  };
  // R7: "no answer for a while" is something we may say; the prompt stays live until expires_at.
  const silence = (sinceIso) => {
    const since = t(sinceIso);
    if (since === null || now - since < NO_ANSWER_NOTICE_MS) return "";
    return ` — no answer yet for ${fmtDuration(now - since)}`;
  };

  switch (p.state) {
    case "pending":
      if (d.attempts > 0 && ctx.online === false) {
        headline = `Waiting for the endpoint to reconnect — ${d.attempts === 1 ? "1 attempt" : `${d.attempts} attempts`} so far, no receipt`;
      } else if (d.attempts > 0) {
        headline = `Sending — attempt ${d.attempts}, no receipt yet`;
        if (d.next_attempt_at) detail.push(`next try ${fmtClock(d.next_attempt_at, now)}`);
      } else if (ctx.online === false) {
        headline = "Waiting for the endpoint to connect";
      } else {
        headline = "Queued for delivery";
      }
      detail.push(expiryNote());
      break;
    case "delivered":
      headline = `Delivered, not yet seen${silence(d.received_at)}`;
      detail.push(`received ${fmtTime(d.received_at, now)}`, expiryNote());
      break;
    case "acknowledged":
      headline = `Seen by the user, no answer yet${silence(d.acknowledged_at || d.received_at)}`;
      detail.push(`seen ${fmtTime(d.acknowledged_at, now)}`, expiryNote());
      break;
    case "approved":
    case "denied": {
      headline = `${p.state === "approved" ? "Approved" : "Denied"} ${fmtTime(p.decided_at, now)}`;
      const lag = t(p.synced_at) - t(p.decided_at);
      if (p.synced_at && lag >= SYNC_LAG_NOTICE_MS) headline += ` (synced ${fmtTime(p.synced_at, now)})`;
      if (p.decided_how === "no_user_policy") detail.push(`automatically: no user present (policy: ${p.on_no_user})`);
      else if (p.decided_how === "endpoint_policy") detail.push(endpointPolicyWords(p));
      else if (p.decided_how) detail.push(p.decided_how === "user" ? "by the user" : `how: ${p.decided_how}`);
      detail.push(describeDisplay(p, now));
      if (p.reason && p.reason.includes("honoured after")) {
        detail.push("answered in time; it reached the bridge after the prompt had been marked " + honouredAfter(p.reason));
      }
      if (late) headline += ` — a conflicting ${lateWord} arrived later (ignored)`;
      break;
    }
    case "expired":
      headline = "Expired — no answer";
      if (late) headline = `Expired — user answered ${lateWord} too late (ignored)`;
      else if (p.provisional) headline += ` (${PROVISIONAL_NOTE})`;
      detail.push(`expired ${fmtTime(p.expires_at, now)}`);
      break;
    case "failed_to_deliver":
      headline = failedHeadline(p, now);
      if (late) headline += ` — user answered ${lateWord} too late (ignored)`;
      else if (p.provisional) headline += ` (${PROVISIONAL_NOTE})`;
      if (p.reason) detail.push(`reason: ${p.reason}`);
      break;
    case "cancelled":
      headline = late ? `Cancelled — user answered ${lateWord} afterwards (ignored)` : "Cancelled";
      detail.push(withdrawnDetail("cancelled", p, now));
      break;
    case "superseded":
      headline = late ? `Re-issued — user answered ${lateWord} on this copy afterwards (ignored)` : "Re-issued (replaced by a new prompt)";
      detail.push(withdrawnDetail("replaced", p, now));
      break;
    default:
      headline = `State: ${p.state}`;
  }
  if (p.adopted) detail.push("recovered from the endpoint's own copy");
  return { headline, detail: detail.filter(Boolean).join(" · "), tone, live, proof: describeProof(p) };
}

/**
 * How the prompt was shown and who answered (issue 16, the agent's signed evidence of display):
 * "shown to DOMAIN\\alice on the console session at 10:04, answered 10:05"; "screen locked —
 * answered by the no-user rule"; "nobody logged in — answered by the no-user rule"; null when
 * the endpoint reported no evidence (an older agent) or nobody answered.
 */
export function describeDisplay(p, now = Date.now()) {
  if (!p.decision) return null;
  if (p.outcome === "locked") return "screen locked — answered by the no-user rule";
  if (p.outcome === "no_user" && p.display) return "nobody logged in — answered by the no-user rule";
  const d = p.display;
  if (!d || d.outcome !== "shown") return null;
  let text = d.user ? `shown to ${d.user}` : "shown";
  if (d.session && d.session !== "unknown") text += ` on the ${d.session} session`;
  if (d.shown_at) text += ` at ${fmtTime(d.shown_at, now)}`;
  if (p.decided_at) text += `, answered ${fmtTime(p.decided_at, now)}`;
  return text;
}

/** "ab12cd34…": enough of a key id to tell keys apart at a glance (the full id is 16 hex). */
export function shortKey(keyId) {
  return keyId ? `${String(keyId).slice(0, 8)}…` : "";
}

/**
 * Whether a decided prompt's answer carries the endpoint's signature (DESIGN §10):
 * `{signed, keyId, text, short}`, or null for a prompt nobody answered. The bridge commits a
 * signed answer only after verifying it, so "signed" here means "verified when recorded".
 */
export function describeProof(p) {
  if (p.state !== "approved" && p.state !== "denied") return null;
  const sig = p.decision_signature;
  if (sig && sig.key_id) {
    return { signed: true, keyId: sig.key_id, text: `Signed by the endpoint (key ${shortKey(sig.key_id)})`, short: `signed by the endpoint (key ${shortKey(sig.key_id)})` };
  }
  return { signed: false, keyId: null, text: "Unsigned (recorded before signing, or the endpoint has no key)", short: "unsigned" };
}

/** The endpoint's own cap on unattended answers changed the outcome (agent `--unattended`). */
export function endpointPolicyWords(p) {
  const word = p.state === "approved" ? "Approved" : "Denied";
  const asked = p.on_no_user && p.on_no_user !== (p.decision || "") ? ` (the prompt asked to ${p.on_no_user})` : "";
  if (p.state === "denied") {
    return `${word} by the endpoint's own policy: nobody was present, and this endpoint does not allow unattended approval${asked}`;
  }
  return `${word} by the endpoint's own policy: nobody was present${asked}`;
}

/** "If no user: approve" with what an endpoint may make of it (DESIGN §10's cap). */
export function noUserWords(onNoUser) {
  if (onNoUser === "approve") {
    return "approve — unless the endpoint's own policy forbids unattended approval (by default an endpoint answers deny instead, or may keep waiting)";
  }
  if (onNoUser === "deny") return "deny";
  if (onNoUser === "wait") return "wait for a user";
  return onNoUser || "—";
}

/** How an answer was made, for the prompt's details. */
export function howWords(how) {
  switch (how) {
    case "user":
    case null:
    case undefined:
      return "by the user";
    case "no_user_policy":
      return "automatically: no user present, the prompt's own policy";
    case "endpoint_policy":
      return "by the endpoint's own policy: nobody was present";
    default:
      return `how: ${how}`;
  }
}

/** Why the bridge refused an answer's signature (the `signature_refused` fact's reason). */
export const REFUSAL_WORDS = {
  missing_signature: "it carried no signature, and this endpoint signs its answers",
  unknown_key: "it was signed by a key this endpoint never registered",
  retired_key: "it was signed by a key that a re-enrollment had retired",
  bad_signature: "its signature did not verify",
};

const ANSWER_WORDS = {
  approve: "'approve'",
  deny: "'deny'",
  dismiss: "a dismissal",
  window_start: "the start of an approval window", // issue 16
  window_revoke: "a revocation of an approval window",
};
const REFUSED_BY = { user: "by the user", no_user_policy: "by the no-user policy", endpoint_policy: "by the endpoint's own policy" };

/**
 * The endpoint's signing keys in words (GET /api/endpoints/{eid}): `{current, summary, keys}`;
 * each key `{keyId, publicKey, current, rekey, label, validity, by}`, oldest first. Every key
 * after the first came with a re-enrollment, which retired the one before it.
 */
export function describeKeys(info, now = Date.now()) {
  const keys = (info.keys || []).map((k, i) => {
    const current = !k.valid_until;
    const rekey = i > 0;
    const label = [current ? "current key" : "retired", rekey ? "re-key (registered by a re-enrollment)" : "first key"].join(" · ");
    const validity = `valid from ${fmtClock(k.valid_from, now)} ${current ? "until now (current)" : `until ${fmtClock(k.valid_until, now)}`}`;
    return { keyId: k.key_id, publicKey: k.public_key, current, rekey, label, validity, by: k.registered_by || "unknown" };
  });
  let summary;
  if (info.key_id) {
    summary = `Answers from this endpoint are signed; current key ${info.key_id}`;
    if (keys.length > 1) summary += ` (${keys.length} keys so far: re-keyed ${keys.length - 1} ${keys.length === 2 ? "time" : "times"})`;
  } else if (keys.length) {
    summary = "No current key: every key of this endpoint has been retired";
  } else if (info.enrolled_at) {
    summary = "No key: this endpoint was enrolled before signing; its answers are unsigned";
  } else {
    summary = "No key yet: no agent has enrolled on this endpoint";
  }
  return { current: info.key_id || null, summary, keys };
}

function honouredAfter(reason) {
  const m = /honoured after (\w+)/.exec(reason);
  const word = { expired: "expired", failed_to_deliver: "undeliverable" };
  return m ? word[m[1]] || m[1] : "expired";
}

function failedHeadline(p, now) {
  const d = p.delivery || {};
  const reason = p.reason || "";
  if (reason.startsWith("rejected_by_runtime")) {
    const why = reason.split(":").slice(1).join(":").trim();
    return `Endpoint refused the prompt${why ? ` — ${why}` : ""}`;
  }
  const life = t(p.expires_at) - t(p.created_at);
  if (d.attempts > 0) {
    const span = (t(d.last_attempt_at) ?? t(p.final_at) ?? now) - t(p.created_at);
    const tries = d.attempts === 1 ? "1 attempt" : `${d.attempts} attempts`;
    const tail = reason.startsWith("no_receipt") ? ", no receipt" : "";
    return `Could not reach endpoint — ${tries} over ${fmtDuration(span)}${tail}`;
  }
  return `Could not reach endpoint — offline for the prompt's whole ${fmtDuration(life)} life`;
}

const AFTER_WORDS = {
  failed_to_deliver: "after it could not be delivered",
  expired: "after it had expired unanswered",
};

function withdrawnDetail(verb, p, now) {
  const who = p.cancelled_by ? ` by ${p.cancelled_by}` : "";
  const at = p.final_at ? ` at ${fmtTime(p.final_at, now)}` : "";
  const m = /after (\w+)/.exec(p.reason || "");
  const after = m ? ` (${AFTER_WORDS[m[1]] || `after ${m[1]}`})` : "";
  let text = `${verb}${who}${at}${after}`;
  const late = p.late_decision;
  if (late) text += ` · late answer ${late.decision} made ${fmtTime(late.decided_at, now)}, reached the bridge ${fmtTime(late.synced_at, now)} — kept for audit only`;
  return text;
}

/** Short words for a state (fleet column, chart legend). */
export const STATE_WORD = {
  pending: "Pending",
  delivered: "Delivered",
  acknowledged: "Seen",
  approved: "Approved",
  denied: "Denied",
  expired: "Expired",
  failed_to_deliver: "Could not reach",
  cancelled: "Cancelled",
  superseded: "Re-issued",
};

/** Fleet's "last outcome" cell. */
export function describeOutcome(outcome, now = Date.now()) {
  if (!outcome) return { text: "none yet", tone: "none" };
  const word = STATE_WORD[outcome.state] || outcome.state;
  return { text: `${word} · ${fmtTime(outcome.at, now)}`, tone: TONE[outcome.state] || "none" };
}

/** Outcome buckets for patterns: answered / missed / withdrawn / open. */
export const BUCKETS = [
  { key: "approved", label: "Approved", states: ["approved"] },
  { key: "denied", label: "Denied", states: ["denied"] },
  { key: "expired", label: "Expired (no answer)", states: ["expired"] },
  { key: "failed", label: "Could not reach", states: ["failed_to_deliver"] },
  { key: "withdrawn", label: "Cancelled / re-issued", states: ["cancelled", "superseded"] },
  { key: "open", label: "Still open", states: ["pending", "delivered", "acknowledged"] },
];
export const MISSED = new Set(["expired", "failed"]);

export function bucketOf(state) {
  for (const b of BUCKETS) if (b.states.includes(state)) return b.key;
  return "open";
}

const WHO = { console: "Console", bridge: "Bridge", runtime: "Endpoint" };

function signedNote(d) {
  if (d.key_id) return ` — signed by the endpoint (key ${shortKey(d.key_id)})`;
  return "key_id" in d ? " — unsigned" : "";
}

/** Timeline line: `{source, who, what}` for one event. Times in `detail` (`*_ms`) become clocks. */
export function describeEvent(e, now = Date.now()) {
  const d = e.detail || {};
  const ms = (v) => (typeof v === "number" ? fmtClock(new Date(v).toISOString(), now) : "—");
  let what;
  switch (e.type) {
    case "created":
      what = d.adopted
        ? `Recovered from the endpoint's copy: "${d.title}"`
        : `Created by ${d.by}: "${d.title}" (${d.action}; expires ${ms(d.expires_at_ms)}; if no user: ${d.on_no_user})`;
      if (d.supersedes) what += ` — replaces ${d.supersedes}`;
      if (d.reason) what += ` — why: ${d.reason}`; // issue 16: the technician's reason and ticket
      if (d.ticket_id) what += ` — ticket ${d.ticket_id}`;
      break;
    case "delivery_attempted":
      what = `Delivery attempt ${d.attempt}` + (d.next_attempt_at_ms ? ` (next try ${ms(d.next_attempt_at_ms)} if no receipt)` : "");
      if (d.error) what += ` — error: ${d.error}`;
      break;
    case "replayed":
      what = `Sent again: ${d.reason}`;
      break;
    case "gave_up":
      what = `Gave up delivering: ${d.reason}${d.detail ? ` (${d.detail})` : ""}`;
      break;
    case "received":
      what = "Endpoint stored the prompt (receipt)";
      break;
    case "acknowledged":
      what = d.how === "dismissed" ? "User dismissed the dialog without answering" : "Shown to the user";
      if (d.how === "dismissed") what += signedNote(d);
      break;
    case "decided": {
      const who = {
        no_user_policy: "No user present — policy answered",
        endpoint_policy: "Nobody present — the endpoint's own policy answered",
      };
      let lead = who[d.how] || "User answered";
      // Issue 16: the agent's evidence says why nobody was asked, or to whom it was shown.
      const rule = d.how === "endpoint_policy" ? "the endpoint's own policy" : "the no-user policy";
      if (d.display?.outcome === "locked") lead = `Screen locked — ${rule} answered`;
      else if (d.display?.outcome === "no_user") lead = `Nobody logged in — ${rule} answered`;
      what = `${lead} '${d.decision}' at ${ms(d.decided_at_ms)}`;
      if (d.display?.outcome === "shown" && d.display.user) {
        what += ` (shown to ${d.display.user}${d.display.session && d.display.session !== "unknown" ? ` on the ${d.display.session} session` : ""})`;
      }
      if (d.how === "endpoint_policy" && d.decision === "deny") what += " (this endpoint does not allow unattended approval)";
      what += signedNote(d);
      break;
    }
    case "signature_refused": {
      const why = REFUSAL_WORDS[d.reason] || "its signature did not hold";
      const answer = ANSWER_WORDS[d.answer] || `'${d.answer}'`;
      const by = REFUSED_BY[d.how] ? ` ${REFUSED_BY[d.how]}` : "";
      const when = typeof d.decided_at_ms === "number" ? `, made ${ms(d.decided_at_ms)}` : "";
      const key = d.key_id ? `, signed with key ${d.key_id}` : ", unsigned";
      what = `The bridge refused an answer: ${why} (${d.reason}) — ${answer}${by}${when}${key}; not recorded, the prompt's state is unchanged`;
      break;
    }
    case "rejected":
      what = `Endpoint refused the prompt: ${d.reason}`;
      break;
    case "no_decision_held":
      what = `Endpoint reports it holds no answer (${d.detail})`;
      break;
    case "cancelled":
      what = `Cancelled by ${d.by}`;
      break;
    case "superseded":
      what = `Replaced by ${d.by_prompt_id} (re-issued by ${d.by})`;
      break;
    case "expired":
      what = d.state === "failed_to_deliver" ? "Expiry reached before the endpoint got it: could not deliver" : "Expiry reached with no answer";
      break;
    case "firmed":
      what = "Outcome is now final: no late answer can change it";
      break;
    case "window_started":
    case "window_ended":
    case "window_revoked":
      what = windowEventWords(e.type, d, ms); // issue 16 (window.js)
      break;
    case "escalated":
      what = d.auto ? `Escalated by the bridge: ${d.reason}` : `Escalated by ${d.by}`;
      if (d.note) what += ` — “${d.note}”`;
      break;
    default:
      what = `${e.type} ${JSON.stringify(d)}`;
  }
  return { source: e.source, who: WHO[e.source] || e.source, what };
}

/**
 * What an exported audit file holds, read back before it is saved: `{ok, header, facts, head,
 * text}` (`header` false: not this endpoint's caisey.audit file at all).
 * The file is JSON Lines — a `caisey.audit` header, one line per fact, and the head — and
 * only `caisey-audit verify` checks its links and signatures; this only names what arrived.
 */
export function describeAuditExport(text, eid) {
  const lines = text.split("\n").filter((l) => l.trim());
  const parse = (line) => {
    try {
      return JSON.parse(line);
    } catch {
      return null;
    }
  };
  const header = lines.length ? parse(lines[0]) : null;
  if (!header || header.type !== "header" || header.format !== "caisey.audit") {
    return { ok: false, header: false, facts: 0, head: null, text: "the file the bridge sent does not start with a caisey.audit header" };
  }
  if (header.endpoint_id !== eid) {
    return { ok: false, header: false, facts: 0, head: null, text: `the file is the audit of another endpoint (${header.endpoint_id})` };
  }
  const last = parse(lines[lines.length - 1]);
  const head = last && last.type === "head" ? last : null;
  const facts = head && typeof head.facts === "number" ? head.facts : lines.filter((l) => parse(l)?.type === "fact").length;
  const tail = head ? `, ending at seq ${head.seq} (head hash ${String(head.hash).slice(0, 12)}…)` : ", with no head line (incomplete?)";
  return { ok: !!head, header: true, facts, head, text: `${facts} ${facts === 1 ? "fact" : "facts"}${tail}` };
}
