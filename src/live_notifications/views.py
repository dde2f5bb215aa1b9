from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render, resolve_url
from django.urls import NoReverseMatch, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .conf import settings as live_settings
from .tokens import token_for


def websocket_url(request: HttpRequest) -> str:
    """The broadcasters' address for this request: same origin, path ``/ws/``."""
    if live_settings.WEBSOCKET_URL:
        return str(live_settings.WEBSOCKET_URL)
    scheme = "wss" if request.is_secure() else "ws"
    return f"{scheme}://{request.get_host()}/ws/"


@require_GET
@never_cache
def token(request: HttpRequest) -> JsonResponse:
    """A fresh WebSocket token for the logged-in user, and where to use it."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "login required"}, status=401)
    return JsonResponse(
        {
            "token": token_for(request.user),
            "url": websocket_url(request),
            "expires_in": live_settings.TOKEN_MAX_AGE,
        }
    )


@require_GET
@login_required
def live(request: HttpRequest) -> HttpResponse:
    """The page that shows notifications as they arrive.

    Its sign-in link is the site's ``LOGIN_URL``; its links to the admin
    are left out where the site has none.
    """
    try:
        admin_url: str | None = reverse("admin:index")
    except NoReverseMatch:
        admin_url = None
    context = {"login_url": resolve_url(settings.LOGIN_URL), "admin_url": admin_url}
    return render(request, "live_notifications/live.html", context)
