// Shows admin changes as they happen.
//
// Protocol (see the README): fetch a short-lived token from Django, open the
// WebSocket, send the token as the first message, then receive one JSON
// message per change. When the connection drops, wait a jittered, growing
// delay, fetch a new token (the old one has expired) and reconnect.
"use strict";

(() => {
  const list = document.getElementById("events");
  const empty = document.getElementById("empty");
  const statusLine = document.getElementById("status");
  const tokenUrl = list.dataset.tokenUrl;
  const loginUrl = list.dataset.loginUrl;

  const FIRST_DELAY = 4; // seconds; the first wait is 2 to 4 s at random
  const MAX_DELAY = 60; // the wait grows up to 30 to 60 s
  const STABLE = 30; // seconds connected after which the backoff starts over
  let attempt = 0;

  function setStatus(state, text) {
    statusLine.dataset.state = state;
    statusLine.textContent = text;
  }

  // "Equal jitter": half the delay is fixed, half random, so that clients
  // dropped together by a restart don't come back together.
  function nextDelay() {
    const ceiling = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** attempt);
    attempt += 1;
    return (ceiling / 2) * (1 + Math.random());
  }

  function reconnectLater(reason) {
    const delay = nextDelay();
    setStatus("waiting", `${reason} Reconnecting in ${Math.round(delay)} s…`);
    setTimeout(connect, delay * 1000);
  }

  function show(event) {
    const item = document.createElement("li");
    item.className = `event ${event.action}`;
    const when = new Date(event.timestamp);
    const time = document.createElement("time");
    time.dateTime = event.timestamp;
    time.textContent = when.toLocaleTimeString();
    const text = document.createElement("span");
    // textContent, never innerHTML: object names come from users.
    text.textContent = ` ${event.user} ${event.action} ${event.model} “${event.object}”: ${event.message}`;
    item.append(time, text);
    list.prepend(item);
    empty.hidden = true;
  }

  async function fetchToken() {
    const response = await fetch(tokenUrl, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      window.location.assign(loginUrl); // the session has ended
      return null;
    }
    if (!response.ok) {
      throw new Error(`token request failed: HTTP ${response.status}`);
    }
    return response.json();
  }

  async function connect() {
    setStatus("connecting", "Connecting…");
    let grant;
    try {
      grant = await fetchToken();
    } catch (error) {
      reconnectLater("Could not get a token.");
      return;
    }
    if (grant === null) return;

    const websocket = new WebSocket(grant.url);
    let openedAt = null;
    websocket.addEventListener("open", () => {
      websocket.send(grant.token);
      openedAt = Date.now();
      setStatus("connected", "Connected: waiting for changes.");
    });
    websocket.addEventListener("message", (message) => {
      show(JSON.parse(message.data));
    });
    websocket.addEventListener("close", (close) => {
      if (openedAt !== null && Date.now() - openedAt > STABLE * 1000) attempt = 0;
      const why = close.reason ? `${close.code} ${close.reason}` : `${close.code}`;
      reconnectLater(`Disconnected (${why}).`);
    });
  }

  connect();
})();
