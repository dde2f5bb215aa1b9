// Shows admin changes as they happen, and resumes after a disconnection.
//
// Protocol (docs/reference/websocket.md): fetch a short-lived token from Django, open the
// WebSocket and send, as the first message, the JSON object
// {"token": <token>, "last_id": <the last id seen, or null>}. The server
// answers {"type": "welcome", "id", "recovered"}, then sends one JSON message
// per change, each with an "id". Messages with a "type" field are control
// messages: "welcome" and "position" ({"type": "position", "id"}, when changes
// this user may not see went by, and before the server closes with 1001) only
// move the page's position. Ids are opaque: the page stores the last one it
// got, in memory and in sessionStorage (so that reloading the tab resumes too),
// and never parses it.
//
// Closed with 1008 "access revoked" (the user was deactivated or deleted, or
// the password changed), the page asks for a token at once: the session is
// then usually gone, and the page says the user is signed out, instead of
// retrying forever. So does any token request answered 401 or 403.
//
// When the connection drops, wait a jittered, growing delay, fetch a new token
// (the old one has expired) and reconnect with the last id: the server replays
// what came after it ("recovered": true). When it can't ("recovered": false:
// the id is older than the history it keeps, or from a history it lost), the
// page says that some changes may have been missed, and goes on from the
// position the welcome gives.
"use strict";

(() => {
  const list = document.getElementById("events");
  const empty = document.getElementById("empty");
  const statusLine = document.getElementById("status");
  const tokenUrl = list.dataset.tokenUrl;
  const loginUrl = list.dataset.loginUrl;
  const adminUrl = list.dataset.adminUrl;

  const FIRST_DELAY = 4; // seconds; the first wait is 2 to 4 s at random
  const MAX_DELAY = 60; // the wait grows up to 30 to 60 s
  const STABLE = 30; // seconds connected after which the backoff starts over
  let attempt = 0;
  let revoked = false; // access was revoked once: the next time, back off as usual

  // The last id received: of an event, a welcome or a position. Kept per tab:
  // sessionStorage survives a reload but isn't shared with other tabs, each of
  // which has a position of its own.
  const STORED_ID = "notifications.lastId";
  let lastId = load();

  function load() {
    try {
      return window.sessionStorage.getItem(STORED_ID);
    } catch (error) {
      return null; // storage disabled: resume within this page's life only
    }
  }

  function remember(id) {
    if (typeof id !== "string") return;
    lastId = id;
    try {
      window.sessionStorage.setItem(STORED_ID, id);
    } catch (error) {
      // storage full or disabled: the id in memory is enough until a reload
    }
  }

  function setStatus(state, text) {
    statusLine.dataset.state = state;
    statusLine.textContent = text;
  }

  // Said once per gap the server couldn't fill; stays until dismissed.
  function showMissed() {
    let notice = document.getElementById("missed");
    if (notice === null) {
      notice = document.createElement("p");
      notice.id = "missed";
      notice.setAttribute("role", "alert");
      // Where to check: the admin, if the site has one.
      const link = document.createElement(adminUrl ? "a" : "span");
      if (adminUrl) link.href = adminUrl;
      link.textContent = adminUrl ? "the admin" : "the site";
      const dismiss = document.createElement("button");
      dismiss.type = "button";
      dismiss.textContent = "Dismiss";
      dismiss.addEventListener("click", () => {
        notice.hidden = true;
      });
      notice.append(
        "Some changes may have been missed while this page was disconnected. " +
          "Check their current state in ",
        link,
        ". ",
        dismiss,
      );
      statusLine.after(notice);
    }
    notice.hidden = false;
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

  function signedOut() {
    setStatus("signed-out", "Signed out. ");
    const link = document.createElement("a");
    link.href = loginUrl;
    link.textContent = "Log in again";
    statusLine.append(link, " to see changes.");
  }

  async function fetchToken() {
    const response = await fetch(tokenUrl, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      signedOut(); // the session has ended: retrying can't help
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
    let resumedFrom = null; // the last id sent, null on a first connection
    websocket.addEventListener("open", () => {
      resumedFrom = lastId;
      websocket.send(JSON.stringify({ token: grant.token, last_id: resumedFrom }));
      openedAt = Date.now();
    });
    websocket.addEventListener("message", (message) => {
      const data = JSON.parse(message.data);
      if (data.type === undefined) {
        show(data);
        remember(data.id);
      } else if (data.type === "welcome") {
        // Authenticated; replayed events, if any, come next.
        remember(data.id);
        if (data.recovered === false && resumedFrom !== null) showMissed();
        setStatus("connected", "Connected: waiting for changes.");
      } else if (data.type === "position") {
        remember(data.id);
      } // other control messages: not for this page
    });
    websocket.addEventListener("close", (close) => {
      if (openedAt !== null && Date.now() - openedAt > STABLE * 1000) attempt = 0;
      if (close.code === 1008 && close.reason === "access revoked" && !revoked) {
        // Deactivated, deleted, or the password changed: the session is
        // likely gone too. Ask for a token once, now: signed out, or back.
        revoked = true;
        connect();
        return;
      }
      const why = close.reason ? `${close.code} ${close.reason}` : `${close.code}`;
      reconnectLater(`Disconnected (${why}).`);
    });
  }

  connect();
})();
