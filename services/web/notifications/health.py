"""``/healthz``, answered before Django looks at the request.

Load balancers and Kubernetes probe by IP address, with a Host header that
ALLOWED_HOSTS rightly refuses; liveness must not depend on it, nor on the
database. So this middleware comes first and answers without reading the host.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

PATH = "/healthz"


class HealthCheckMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == PATH and request.method in ("GET", "HEAD"):
            return HttpResponse("ok\n", content_type="text/plain")
        return self.get_response(request)
