"""``/healthz`` and ``/metrics``, answered before Django looks at the request.

Load balancers, Kubernetes probes and Prometheus reach pods by IP address, with
a Host header that ALLOWED_HOSTS rightly refuses; these endpoints must not
depend on it, nor on the database. So this middleware comes first and answers
without reading the host. The edge proxy keeps /metrics from the public.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .publishing import counters

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"


def healthz() -> HttpResponse:
    """Alive: the process answers."""
    return HttpResponse("ok\n", content_type="text/plain")


def metrics() -> HttpResponse:
    """Publishing counters in the Prometheus text format, for this worker process."""
    pid = os.getpid()
    body = (
        "# HELP web_events_published_total Events published to Redis by this worker.\n"
        "# TYPE web_events_published_total counter\n"
        f'web_events_published_total{{pid="{pid}"}} {counters.published}\n'
        "# HELP web_event_publish_failures_total Events lost because Redis refused them.\n"
        "# TYPE web_event_publish_failures_total counter\n"
        f'web_event_publish_failures_total{{pid="{pid}"}} {counters.failed}\n'
    )
    return HttpResponse(body, content_type="text/plain; version=0.0.4")


ENDPOINTS: dict[str, Callable[[], HttpResponse]] = {HEALTH_PATH: healthz, METRICS_PATH: metrics}


class OperationsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        endpoint = ENDPOINTS.get(request.path)
        if endpoint is not None and request.method in ("GET", "HEAD"):
            return endpoint()
        return self.get_response(request)
