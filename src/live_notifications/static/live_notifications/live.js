// The live page: admin changes and the user's own events as they happen.
//
// A user of client.js's documented API only (docs/reference/javascript-api.md):
// the client connects, resumes and backs off; this module shows what it says.
import { LiveNotifications } from "./client.js";

const list = document.getElementById("events");
const empty = document.getElementById("empty");
const statusLine = document.getElementById("status");
const { tokenUrl, loginUrl, adminUrl } = list.dataset;

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

// What a line says: an admin change, or an app event (its data as JSON).
function describe(event) {
  if (event.event === undefined) {
    return [`event ${event.action}`, ` ${event.user} ${event.action} ${event.model} “${event.object}”: ${event.message}`];
  }
  // A message for people, if the site gave one; the data as JSON otherwise.
  if (typeof event.data?.message === "string") return ["event app", ` ${event.data.message}`];
  const data = event.data === null ? "" : `: ${JSON.stringify(event.data)}`;
  return ["event app", ` ${event.event}${data}`];
}

function show(event) {
  const [className, words] = describe(event);
  const item = document.createElement("li");
  item.className = className;
  if (event.event !== undefined) item.dataset.event = event.event;
  const time = document.createElement("time");
  time.dateTime = event.timestamp;
  time.textContent = new Date(event.timestamp).toLocaleTimeString();
  const text = document.createElement("span");
  text.textContent = words; // textContent, never innerHTML: names come from users
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

const live = new LiveNotifications({ tokenUrl });
live.addEventListener("message", ({ detail }) => show(detail));
live.addEventListener("missed", showMissed);
live.addEventListener("status", ({ detail }) => {
  const { status, reason, delay } = detail;
  if (status === "connecting") setStatus(status, "Connecting…");
  else if (status === "connected") setStatus(status, "Connected: waiting for changes.");
  else if (status === "waiting") {
    setStatus(status, `Disconnected (${reason}). Reconnecting in ${Math.round(delay)} s…`);
  } else if (status === "signed-out") signedOut();
});
live.start();
