// Approval windows (issue 16, DESIGN §13): what the prompt page says of a prompt's window —
// "access until 10:35", "revoked by the user at 10:20" — and its timeline lines. Pure words;
// prompt.js places them and owns the Revoke button.

const hhmm = (iso) => {
  const d = new Date(iso);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
};

const minutes = (m) => (m >= 60 && m % 60 === 0 ? `${m / 60} h` : m > 60 ? `${Math.floor(m / 60)} h ${m % 60} min` : `${m} min`);

/** `{text, tone, revocable}` for a prompt's `window` (null: the prompt asked for none). */
export function windowWords(w, now = Date.now()) {
  if (!w) return null;
  const granted = w.minutes_granted && w.minutes_granted < w.minutes_asked ? ` (the user granted ${minutes(w.minutes_granted)} of the ${minutes(w.minutes_asked)} asked)` : "";
  switch (w.state) {
    case "asked":
      return { text: `Approval window asked: ${minutes(w.minutes_asked)} from the approval`, tone: "live", revocable: false };
    case "not_granted":
      return { text: `No approval window: the prompt was not approved (${minutes(w.minutes_asked)} asked)`, tone: "none", revocable: false };
    case "active": {
      const left = Math.max(0, Date.parse(w.ends_at) - now);
      const rest = left >= 60_000 ? `${Math.round(left / 60_000)} min left` : `${Math.round(left / 1000)} s left`;
      return { text: `Access until ${hhmm(w.ends_at)} — ${rest}${granted}`, tone: "ok", revocable: true };
    }
    case "ended":
      return { text: `Access ended at ${hhmm(w.ended_at || w.ends_at)}${granted}`, tone: "none", revocable: false };
    case "revoked": {
      const by = w.revoked_by_user ? "the user" : w.revoked_by;
      return { text: `Revoked by ${by} at ${hhmm(w.revoked_at)} (access was until ${hhmm(w.ends_at)})`, tone: "missed", revocable: false };
    }
    default:
      return { text: `Approval window: ${w.state}`, tone: "live", revocable: false };
  }
}

/** The timeline's words for a window fact (`fmt`: epoch ms → the console's clock). */
export function windowEventWords(type, d, fmt) {
  if (type === "window_started") {
    const shorter = d.minutes < d.asked ? ` (shortened by the user from ${minutes(d.asked)})` : "";
    return `Approval window started: ${minutes(d.minutes)}, access until ${fmt(d.ends_at_ms)}${shorter}${d.key_id ? ", signed by the endpoint" : ""}`;
  }
  if (type === "window_ended") return `Approval window ended at ${fmt(d.ended_at_ms)}`;
  const by = d.user ? `the user on the endpoint${d.key_id ? " (signed by the endpoint)" : ""}` : d.by;
  return `Approval window revoked by ${by} at ${fmt(d.revoked_at_ms)}`;
}
