// The bridge's HTTP API (DESIGN §8) as the console uses it.
//
// - Every call carries the technician token; a 401 signs the console out.
// - Polled GETs send If-None-Match and keep the last body: a 304 costs nothing and returns
//   the cached body with `changed: false`.
// - A failure is one of two kinds: `NetworkError` (the bridge did not answer, or answered
//   5xx: "bridge unreachable") and `ApiError` (the bridge answered with a refusal; its code,
//   message and any extra fields such as the 409's current `prompt` are kept).
// - Creates and re-issues carry an Idempotency-Key that the caller keeps for as long as the
//   same request may still be retried, so a retry after a lost answer never makes a second
//   prompt (DESIGN §5).
// - A file (the audit export) is fetched with the token too — a plain link could not carry
//   it — and handed back as a Blob for the caller to save.

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(`${status} ${err.code || "error"}: ${err.message || "the bridge refused the request"}`);
    this.status = status;
    this.code = err.code || `http_${status}`;
    this.detail = err.message || "";
    this.body = body;
  }
}

export class NetworkError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;
  }
}

/** A fresh Idempotency-Key. getRandomValues works on plain http too (randomUUID does not). */
export function newIdempotencyKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** `attachment; filename="x.jsonl"` → "x.jsonl" (quoted or bare; null when absent). */
export function attachmentName(header) {
  const m = /filename\s*=\s*(?:"([^"]*)"|([^;\s]+))/i.exec(header || "");
  return m ? m[1] ?? m[2] : null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Api {
  /** `onUnauthorized(err)` runs on any 401; `onClock(offsetMs)` gets bridge-minus-browser time. */
  constructor({ token, onUnauthorized, onClock }) {
    this.token = token;
    this.onUnauthorized = onUnauthorized || (() => {});
    this.onClock = onClock || (() => {});
    this.etags = new Map(); // path → {etag, body}
  }

  async request(method, path, { body, headers = {}, poll = false } = {}) {
    const init = {
      method,
      cache: "no-store", // we do our own conditional requests; 304s must reach us as 304s
      headers: { Accept: "application/json", Authorization: `Bearer ${this.token}`, ...headers },
    };
    const cached = poll ? this.etags.get(path) : undefined;
    if (cached) init.headers["If-None-Match"] = cached.etag;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    const sentAt = Date.now();
    try {
      response = await fetch(path, init);
    } catch (exc) {
      throw new NetworkError(`the bridge did not answer (${exc.message || exc})`);
    }
    this.#clock(response, sentAt);
    if (response.status === 304 && cached) return { status: 304, body: cached.body, changed: false };
    if (response.status >= 500) throw new NetworkError(`the bridge answered ${response.status}`, response.status);
    let data = null;
    const text = await response.text().catch(() => "");
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        throw new NetworkError(`the bridge answered ${response.status} with a body that is not JSON`, response.status);
      }
    }
    if (!response.ok) {
      const err = new ApiError(response.status, data);
      if (response.status === 401) this.onUnauthorized(err);
      throw err;
    }
    const etag = response.headers.get("etag");
    if (poll && etag) this.etags.set(path, { etag, body: data });
    return { status: response.status, body: data, changed: true };
  }

  /**
   * GET a file with the technician token (a plain link cannot carry it): `{blob, filename}`.
   * Failures are the same two kinds as `request`'s; a refusal's JSON body is kept.
   */
  async download(path) {
    let response;
    const sentAt = Date.now();
    try {
      response = await fetch(path, { method: "GET", cache: "no-store", headers: { Authorization: `Bearer ${this.token}` } });
    } catch (exc) {
      throw new NetworkError(`the bridge did not answer (${exc.message || exc})`);
    }
    this.#clock(response, sentAt);
    if (response.status >= 500) throw new NetworkError(`the bridge answered ${response.status}`, response.status);
    if (!response.ok) {
      let data = null;
      try {
        data = JSON.parse(await response.text());
      } catch {
        data = null;
      }
      const err = new ApiError(response.status, data);
      if (response.status === 401) this.onUnauthorized(err);
      throw err;
    }
    let blob;
    try {
      blob = await response.blob();
    } catch (exc) {
      throw new NetworkError(`the download broke off (${exc.message || exc})`);
    }
    return { blob, filename: attachmentName(response.headers.get("content-disposition")) };
  }

  #clock(response, sentAt) {
    const date = response.headers.get("date");
    if (!date) return;
    // Date has one-second resolution: the bridge's clock was somewhere in [date, date + 1 s).
    const serverMid = Date.parse(date) + 500;
    const localMid = (sentAt + Date.now()) / 2;
    this.onClock(serverMid - localMid);
  }

  get(path, opts) {
    return this.request("GET", path, opts);
  }

  /**
   * POST that may create a prompt: retried on network failure with the same key, so the
   * bridge answers the original prompt (200) if an earlier try did get through.
   * `onRetry(attempt, err)` is told before each retry.
   */
  async postIdempotent(path, body, key, { attempts = 4, onRetry } = {}) {
    let lastError;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      try {
        const headers = key ? { "Idempotency-Key": key } : {};
        return await this.request("POST", path, { body, headers });
      } catch (exc) {
        if (!(exc instanceof NetworkError)) throw exc;
        lastError = exc;
        if (attempt < attempts) {
          if (onRetry) onRetry(attempt, exc);
          await sleep(400 * 2 ** (attempt - 1));
        }
      }
    }
    throw lastError;
  }

  endpoints() {
    return this.get("/api/endpoints", { poll: true });
  }
  /** The endpoint itself: label, enrollment, signing keys, audit head (DESIGN §10). */
  endpoint(eid) {
    return this.get(`/api/endpoints/${encodeURIComponent(eid)}`, { poll: true });
  }
  /** The endpoint's audit chain (JSON Lines) as a Blob, for `caisey-audit verify`. */
  auditExport(eid) {
    return this.download(`/api/endpoints/${encodeURIComponent(eid)}/audit`);
  }
  prompts(eid, limit = 200) {
    return this.get(`/api/endpoints/${encodeURIComponent(eid)}/prompts?limit=${limit}`, { poll: true });
  }
  prompt(eid, pid) {
    return this.get(`/api/endpoints/${encodeURIComponent(eid)}/prompts/${encodeURIComponent(pid)}`);
  }
  create(eid, body, key, opts) {
    return this.postIdempotent(`/api/endpoints/${encodeURIComponent(eid)}/prompts`, body, key, opts);
  }
  cancel(eid, pid, opts) {
    // Cancel is safe to repeat (a cancelled prompt answers 200 with its state again): no key needed.
    return this.postIdempotent(`/api/endpoints/${encodeURIComponent(eid)}/prompts/${encodeURIComponent(pid)}/cancel`, undefined, null, opts);
  }
  // --- administration (issue 17): every console action is a documented API call -------------
  /** Who this token is: {name, role, clients} (clients null: unscoped). */
  whoami() {
    return this.get("/api/whoami");
  }
  tokens() {
    return this.get("/api/tokens", { poll: true });
  }
  createToken(body) {
    return this.request("POST", "/api/tokens", { body });
  }
  revokeToken(name) {
    return this.request("DELETE", `/api/tokens/${encodeURIComponent(name)}`);
  }
  /** A one-time enrollment token for a new endpoint, or a re-key of an existing one (admin). */
  enroll(body) {
    return this.request("POST", "/api/enrollments", { body });
  }
  updateEndpoint(eid, body) {
    return this.request("PATCH", `/api/endpoints/${encodeURIComponent(eid)}`, { body });
  }
  removeEndpoint(eid) {
    return this.request("DELETE", `/api/endpoints/${encodeURIComponent(eid)}`);
  }
  retry(eid, pid, body, key, opts) {
    return this.postIdempotent(`/api/endpoints/${encodeURIComponent(eid)}/prompts/${encodeURIComponent(pid)}/retry`, body, key, opts);
  }
  /** Escalate by hand (issue 13): recorded with who; not retried (each press is one escalation). */
  escalate(eid, pid, note) {
    return this.request("POST", `/api/endpoints/${encodeURIComponent(eid)}/prompts/${encodeURIComponent(pid)}/escalate`, { body: note ? { note } : {} });
  }
  /** Revoke a prompt's approval window (issue 16): idempotent (an already revoked window answers as it is). */
  revokeWindow(eid, pid) {
    return this.request("POST", `/api/endpoints/${encodeURIComponent(eid)}/prompts/${encodeURIComponent(pid)}/revoke`);
  }
  // Webhooks (admin; issue 13, DESIGN §11).
  webhooks() {
    return this.get("/api/webhooks", { poll: true });
  }
  createWebhook(body) {
    return this.request("POST", "/api/webhooks", { body });
  }
  deleteWebhook(id) {
    return this.request("DELETE", `/api/webhooks/${encodeURIComponent(id)}`);
  }
  testWebhook(id) {
    return this.request("POST", `/api/webhooks/${encodeURIComponent(id)}/test`);
  }
}
