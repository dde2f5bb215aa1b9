"""``manage.py websocket_token USERNAME``: the how-to's ``get_token(user)``, as a command."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from live_notifications.tokens import token_for


class Command(BaseCommand):
    help = (
        "Print a fresh WebSocket token for a user (valid LIVE_NOTIFICATIONS_TOKEN_MAX_AGE seconds)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User._default_manager.get_by_natural_key(username)
        except User.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive: a token would be refused")
        # The token alone on the last line, for scripts: `... | tail -n 1`.
        self.stdout.write(token_for(user))
