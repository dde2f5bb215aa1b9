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

from shared import prometheus
from shared.prometheus import Family

from .publishing import counters

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"


def healthz() -> HttpResponse:
    """Alive: the process answers."""
    return HttpResponse("ok\n", content_type="text/plain")


def metrics() -> HttpResponse:
    """Publishing counters in the Prometheus text format, for this worker process."""
    worker = f'{{pid="{os.getpid()}"}}'
    body = prometheus.render(
        [
            Family(
                "web_events_published_total",
                "counter",
                "Log entries (events and access changes) committed to the outbox by this worker.",
                {worker: counters.published},
            ),
        ]
    )
    return HttpResponse(body, content_type=prometheus.CONTENT_TYPE)


ENDPOINTS: dict[str, Callable[[], HttpResponse]] = {HEALTH_PATH: healthz, METRICS_PATH: metrics}


class OperationsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        endpoint = ENDPOINTS.get(request.path)
        if endpoint is not None and request.method in ("GET", "HEAD"):
            return endpoint()
        return self.get_response(request)
