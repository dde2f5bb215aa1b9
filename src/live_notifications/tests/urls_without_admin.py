"""A site that mounts the notifications under /live/ and has no admin."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [path("live/", include("live_notifications.urls"))]
