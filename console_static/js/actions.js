// Technician actions — create, cancel, re-issue — and the words for the bridge's answer.
//
// Every action reports what the bridge said (status, code, message, and for a 409 the
// prompt's current state). Creates and re-issues carry an Idempotency-Key made once per
// request and kept until the bridge gives a definite answer: the automatic retries after a
// network failure reuse it, and so does pressing the button again after they ran out. So a
// retried create is answered with the original prompt (200), never a second one.

import { ApiError, NetworkError, newIdempotencyKey } from "./api.js";
import { h } from "./dom.js";
import { describePrompt } from "./describe.js";

const pendingKeys = new Map(); // request fingerprint → Idempotency-Key, until a definite answer

/** On sign-out: a key belongs to the technician who made the request. */
export function forgetPendingKeys() {
  pendingKeys.clear();
}

function keyFor(fingerprint) {
  let key = pendingKeys.get(fingerprint);
  if (!key) {
    key = newIdempotencyKey();
    pendingKeys.set(fingerprint, key);
  }
  return key;
}

export function promptHref(eid, pid) {
  return `#/endpoint/${encodeURIComponent(eid)}/prompt/${encodeURIComponent(pid)}`;
}

const STATUS_TEXT = { 200: "200 OK", 201: "201 Created", 409: "409 Conflict", 422: "422 Unprocessable", 400: "400 Bad Request", 404: "404 Not Found", 429: "429 Too Many" };
const statusText = (s) => STATUS_TEXT[s] || String(s);

/** `report({tone, parts})` shows a result; tone is ok | error | info. */
async function run(ctx, report, label, call) {
  report({ tone: "info", parts: [`${label}…`] });
  try {
    return await call((attempt, exc) =>
      report({ tone: "info", parts: [`${label}: no answer (${exc.message}); retrying the same request (try ${attempt + 1})…`] }),
    );
  } catch (exc) {
    if (exc instanceof NetworkError) {
      report({
        tone: "error",
        parts: [`${label} failed: could not reach the bridge (${exc.message}). Press the button again to retry — the same request key is reused, so nothing is done twice.`],
      });
      return null;
    }
    if (exc instanceof ApiError) {
      const parts = [`${label} refused — the bridge answered ${statusText(exc.status)} ${exc.code}: ${exc.detail}`];
      const current = exc.body && exc.body.prompt;
      if (current) parts.push(` Current state: ${describePrompt(current, ctx.now()).headline}.`);
      report({ tone: "error", parts, prompt: current || null, status: exc.status });
      return { refused: exc, prompt: current || null };
    }
    throw exc;
  }
}

export async function createPrompt(ctx, eid, body, report) {
  const fingerprint = `create ${eid} ${JSON.stringify(body)}`;
  const key = keyFor(fingerprint);
  const result = await run(ctx, report, "Create", (onRetry) => ctx.api.create(eid, body, key, { onRetry }));
  if (result === null) return null; // network: keep the key for the next press
  pendingKeys.delete(fingerprint);
  if (result.refused) return null;
  const p = result.body;
  report({
    tone: "ok",
    status: result.status,
    prompt: p,
    parts: [
      result.status === 201 ? "Created — the bridge answered 201 Created: " : "Already created by an earlier try of this request — the bridge answered 200 OK with the same prompt: ",
      h("a", { href: promptHref(eid, p.prompt_id) }, `“${p.title}”`),
      ` (${describePrompt(p, ctx.now()).headline}).`,
    ],
  });
  return p;
}

export async function cancelPrompt(ctx, eid, pid, report) {
  const result = await run(ctx, report, "Cancel", (onRetry) => ctx.api.cancel(eid, pid, { onRetry }));
  if (result === null) return null;
  if (result.refused) return result.prompt;
  const p = result.body;
  report({ tone: "ok", status: result.status, prompt: p, parts: [`Cancel accepted — the bridge answered ${statusText(result.status)}; the prompt is now: ${describePrompt(p, ctx.now()).headline}.`] });
  return p;
}

export async function reissuePrompt(ctx, eid, pid, overrides, report) {
  const fingerprint = `retry ${eid} ${pid} ${JSON.stringify(overrides || {})}`;
  const key = keyFor(fingerprint);
  const result = await run(ctx, report, "Re-issue", (onRetry) => ctx.api.retry(eid, pid, overrides || {}, key, { onRetry }));
  if (result === null) return null;
  pendingKeys.delete(fingerprint);
  if (result.refused) return null;
  const p = result.body;
  report({
    tone: "ok",
    status: result.status,
    prompt: p,
    parts: [
      result.status === 201 ? "Re-issued — the bridge answered 201 Created: new prompt " : "Already re-issued by an earlier try — the bridge answered 200 OK: ",
      h("a", { href: promptHref(eid, p.prompt_id) }, `“${p.title}”`),
      ` (${describePrompt(p, ctx.now()).headline}); it replaces the old one.`,
    ],
  });
  return p;
}

/** The states a technician may still cancel: open, or only provisionally final (DESIGN R3, R4). */
export function cancellable(p) {
  return ["pending", "delivered", "acknowledged"].includes(p.state) || (p.provisional && ["expired", "failed_to_deliver"].includes(p.state));
}
