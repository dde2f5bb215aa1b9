// The browser client of live_notifications: an ES module, no build step.
//
//   import { LiveNotifications } from ".../live_notifications/client.js";
//   const live = new LiveNotifications({ tokenUrl: "/live/api/token/" });
//   live.addEventListener("message", ({ detail }) => console.log(detail));
//   live.start();
//
// It speaks the resuming conversation (docs/reference/websocket.md): for
// every connection it fetches a token from Django ({token, url}), opens the
// WebSocket and sends {"token", "last_id"}; the server answers
// {"type": "welcome", "id", "recovered"}, replays what the tab missed, then
// sends each event. Control messages ({"type": …}) only move the position.
// Ids are opaque: the last one is kept in memory and in sessionStorage (a
// reload of the tab resumes; other tabs keep their own) and never parsed.
//
// Events dispatched (CustomEvent, with `detail`):
//   "message": every event, an admin change or an app event, as sent;
//   "status":  {status, reason, delay}: "connecting", "connected",
//              "waiting" (for `delay` seconds), "signed-out", "closed";
//   "missed":  the server couldn't replay what came since the last id (the
//              tab was away longer than its history): reload what you show.
//
// A drop is followed by a jittered, growing wait (minDelay to twice it,
// doubled each time up to maxDelay), cut short when the browser comes back
// online or a hidden tab becomes visible. 1008 "access revoked" makes it ask
// for a token at once: a 401 or 403 then means signed out, and it stops.

const WAITING = "waiting";

export class LiveNotifications extends EventTarget {
  #tokenUrl;
  #storageKey;
  #minDelay;
  #maxDelay;
  #stable;
  #status = "closed";
  #lastId = null;
  #websocket = null;
  #timer = null;
  #attempt = 0;
  #revoked = false; // closed for revocation once: the next time, back off as usual
  #stopped = true;
  #generation = 0; // bumped on every connection and stop: stale callbacks see it
  #listeners = [];

  /**
   * @param {object} options
   * @param {string} options.tokenUrl where to GET {token, url} (the token endpoint)
   * @param {string} [options.storageKey] the sessionStorage key of the last id
   * @param {number} [options.minDelay] seconds before the first retry (2)
   * @param {number} [options.maxDelay] the most the delay grows to (30)
   * @param {number} [options.stable] seconds connected after which it starts over (30)
   */
  constructor({
    tokenUrl,
    storageKey = "notifications.lastId",
    minDelay = 2,
    maxDelay = 30,
    stable = 30,
  }) {
    super();
    if (typeof tokenUrl !== "string" || tokenUrl === "") {
      throw new TypeError("LiveNotifications needs a tokenUrl");
    }
    this.#tokenUrl = tokenUrl;
    this.#storageKey = storageKey;
    this.#minDelay = minDelay;
    this.#maxDelay = maxDelay;
    this.#stable = stable;
    this.#lastId = this.#load();
  }

  /** "connecting", "connected", "waiting", "signed-out" or "closed". */
  get status() {
    return this.#status;
  }

  /** The id of the last event, welcome or position received; null before any. */
  get lastId() {
    return this.#lastId;
  }

  /** Connect, and stay connected until close() or the page goes away. */
  start() {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#listen(window, "online", () => this.#now());
    this.#listen(document, "visibilitychange", () => {
      if (document.visibilityState === "visible") this.#now();
    });
    this.#listen(window, "pagehide", () => this.close());
    this.#connect();
  }

  /** Disconnect for good (start() connects again, resuming). */
  close() {
    this.#stop("closed");
  }

  #listen(target, type, listener) {
    target.addEventListener(type, listener);
    this.#listeners.push(() => target.removeEventListener(type, listener));
  }

  #stop(status, reason) {
    this.#stopped = true;
    this.#generation += 1;
    clearTimeout(this.#timer);
    this.#timer = null;
    for (const remove of this.#listeners.splice(0)) remove();
    if (this.#websocket !== null) {
      this.#websocket.close(1000);
      this.#websocket = null;
    }
    this.#setStatus(status, { reason });
  }

  // Back online, or visible again: don't wait out the delay.
  #now() {
    if (this.#stopped || this.#status !== WAITING) return;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#connect();
  }

  #setStatus(status, { reason = null, delay = null } = {}) {
    this.#status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: { status, reason, delay } }));
  }

  #load() {
    try {
      return window.sessionStorage.getItem(this.#storageKey);
    } catch {
      return null; // storage disabled: resume within this page's life only
    }
  }

  #remember(id) {
    if (typeof id !== "string") return;
    this.#lastId = id;
    try {
      window.sessionStorage.setItem(this.#storageKey, id);
    } catch {
      // storage full or disabled: the id in memory is enough until a reload
    }
  }

  // "Equal jitter": half the delay fixed, half random, so that the clients
  // a restart dropped together don't come back together.
  #retry(reason) {
    if (this.#stopped) return;
    const ceiling = Math.min(this.#maxDelay, this.#minDelay * 2 ** this.#attempt);
    this.#attempt += 1;
    const delay = ceiling * (1 + Math.random());
    this.#setStatus(WAITING, { reason, delay });
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#connect();
    }, delay * 1000);
  }

  async #fetchToken() {
    const response = await fetch(this.#tokenUrl, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401 || response.status === 403) return null; // signed out
    if (!response.ok) throw new Error(`token request: HTTP ${response.status}`);
    return response.json();
  }

  async #connect() {
    const generation = ++this.#generation;
    this.#setStatus("connecting");
    let grant;
    try {
      grant = await this.#fetchToken();
    } catch (error) {
      if (generation === this.#generation) this.#retry(`no token: ${error.message}`);
      return;
    }
    if (generation !== this.#generation) return; // stopped, or overtaken
    if (grant === null) {
      this.#stop("signed-out", "the session has ended");
      return;
    }
    const websocket = new WebSocket(grant.url);
    this.#websocket = websocket;
    let openedAt = null;
    let resumedFrom = null;
    websocket.addEventListener("open", () => {
      resumedFrom = this.#lastId;
      websocket.send(JSON.stringify({ token: grant.token, last_id: resumedFrom }));
      openedAt = Date.now();
    });
    websocket.addEventListener("message", ({ data }) => {
      if (generation !== this.#generation) return;
      const message = JSON.parse(data);
      if (message.type === undefined) {
        this.#remember(message.id);
        this.dispatchEvent(new CustomEvent("message", { detail: message }));
      } else if (message.type === "welcome") {
        this.#remember(message.id);
        this.#revoked = false;
        this.#setStatus("connected");
        if (message.recovered === false && resumedFrom !== null) {
          this.dispatchEvent(new CustomEvent("missed", { detail: { id: message.id } }));
        }
      } else if (message.type === "position") {
        this.#remember(message.id);
      } // other control messages: not for this client
    });
    websocket.addEventListener("close", ({ code, reason }) => {
      if (generation !== this.#generation) return; // closed by close(), or replaced
      this.#websocket = null;
      if (openedAt !== null && Date.now() - openedAt > this.#stable * 1000) this.#attempt = 0;
      if (code === 1008 && reason === "access revoked" && !this.#revoked) {
        // Deactivated, deleted, or the password changed: the session is
        // likely gone too. Ask for a token once, now: signed out, or back.
        this.#revoked = true;
        this.#connect();
        return;
      }
      this.#retry(reason ? `${code} ${reason}` : `${code}`);
    });
  }
}
