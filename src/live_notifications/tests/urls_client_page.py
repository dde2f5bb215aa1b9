"""A site whose page /client-test/ uses the browser client's documented API only.

What the client tells the page is kept in ``window.log`` for the tests to
read. ``?delays=never`` makes its retries an hour apart.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.templatetags.static import static
from django.urls import include, path

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>client.js</title>
<script type="module">
  import { LiveNotifications } from "%(client)s";

  window.log = { messages: [], statuses: [], missed: 0 };
  const live = new LiveNotifications({ tokenUrl: "/api/token/", %(delays)s });
  live.addEventListener("message", ({ detail }) => window.log.messages.push(detail));
  live.addEventListener("status", ({ detail }) => window.log.statuses.push(detail));
  live.addEventListener("missed", () => { window.log.missed += 1; });
  window.live = live;
  live.start();
</script>
"""

DELAYS = {
    # Quick retries, for the tests that wait for them.
    "quick": "minDelay: 0.1, maxDelay: 0.5",
    # An hour: only the browser's events can bring the client back in time.
    "never": "minDelay: 3600, maxDelay: 3600",
}


def client_page(request: HttpRequest) -> HttpResponse:
    delays = DELAYS[request.GET.get("delays", "quick")]
    client = static("live_notifications/client.js")
    return HttpResponse(PAGE % {"client": client, "delays": delays})


urlpatterns = [
    path("client-test/", client_page),
    path("", include("live_notifications.urls")),
]
