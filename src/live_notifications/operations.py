"""``/healthz``, answered before Django looks at the request.

Load balancers and Kubernetes probes reach pods by IP address, with a Host
header that ALLOWED_HOSTS rightly refuses; the health check must not depend
on it, nor on the database. So this middleware comes first and answers
without reading the host. Metrics are not here: gunicorn's master serves
them, for all workers, on WEB_METRICS_PORT (:mod:`live_notifications.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

HEALTH_PATH = "/healthz"


def healthz() -> HttpResponse:
    """Alive: the process answers."""
    return HttpResponse("ok\n", content_type="text/plain")


ENDPOINTS: dict[str, Callable[[], HttpResponse]] = {HEALTH_PATH: healthz}


class OperationsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        endpoint = ENDPOINTS.get(request.path)
        if endpoint is not None and request.method in ("GET", "HEAD"):
            return endpoint()
        return self.get_response(request)
