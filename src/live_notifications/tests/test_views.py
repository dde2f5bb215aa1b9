"""The token endpoint, the live page and the health check, over HTTP."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from sesame.utils import get_token, get_user

from live_notifications.tokens import user_for

pytestmark = pytest.mark.django_db


def test_token_requires_login(client: Client) -> None:
    response = client.get("/api/token/")
    assert response.status_code == 401
    assert response.json() == {"error": "login required"}


def test_token_for_the_logged_in_user(client: Client, django_user_model: type[User]) -> None:
    alice = django_user_model.objects.create_user("alice", password="a-Long-passphrase-1")
    client.force_login(alice)

    response = client.get("/api/token/")

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    grant = response.json()
    assert user_for(grant["token"]) == alice
    assert grant["url"] == "ws://testserver/ws/"
    assert grant["expires_in"] == 30


def test_websocket_tokens_are_not_login_links(django_user_model: type[User]) -> None:
    alice = django_user_model.objects.create_user("alice")
    client = Client()
    client.force_login(alice)
    websocket_token = client.get("/api/token/").json()["token"]
    assert get_user(websocket_token) is None  # not a login link
    assert user_for(get_token(alice)) is None  # a login link is not a WebSocket token


@override_settings(LIVE_NOTIFICATIONS_WEBSOCKET_URL="wss://push.example.com/")
def test_websocket_url_can_be_configured(admin_client: Client) -> None:
    assert admin_client.get("/api/token/").json()["url"] == "wss://push.example.com/"


def test_websocket_url_follows_https(admin_client: Client) -> None:
    assert admin_client.get("/api/token/", secure=True).json()["url"] == "wss://testserver/ws/"


def test_live_page_sends_anonymous_users_to_login(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/")


def test_live_page(admin_client: Client) -> None:
    response = admin_client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-token-url="/api/token/"' in page
    assert 'data-admin-url="/admin/"' in page  # where the "missed" notice sends the user
    assert "live_notifications/live.js" in page


def test_healthz(client: Client) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.content) == (200, b"ok\n")


def test_probes_by_ip_address_are_answered(client: Client) -> None:
    # Load balancers and Kubernetes send Host: <pod IP>, not in ALLOWED_HOSTS.
    assert client.get("/healthz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/api/token/", HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_no_metrics_on_the_public_port(client: Client) -> None:
    # gunicorn's master serves them on WEB_METRICS_PORT (test_gunicorn.py).
    assert client.get("/metrics").status_code == 404


@override_settings(LOGIN_URL="/accounts/login/")
def test_live_page_signs_in_at_the_sites_login_url(admin_client: Client) -> None:
    page = admin_client.get("/").content.decode()
    assert 'data-login-url="/accounts/login/?next=/"' in page


@pytest.mark.urls("live_notifications.tests.urls_without_admin")
@override_settings(LOGIN_URL="/accounts/login/")
def test_live_page_without_an_admin(admin_client: Client) -> None:
    """A site with no admin: the page renders, with no link to one."""
    response = admin_client.get("/live/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "data-admin-url" not in page and "on the site" in page
    assert 'data-token-url="/live/api/token/"' in page  # mounted under a prefix
