from __future__ import annotations

from django.urls import path

from . import views

app_name = "live_notifications"

urlpatterns = [
    path("", views.live, name="live"),
    path("api/token/", views.token, name="token"),
]
