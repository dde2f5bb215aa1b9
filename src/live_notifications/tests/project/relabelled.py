"""The notifications app under another label, as a project whose own app is called so would.

The label names the tables (``live_outboxevent``): whatever reads them
directly (the relay) must take their names from the models.
"""

from __future__ import annotations

from live_notifications.apps import LiveNotificationsConfig


class RelabelledConfig(LiveNotificationsConfig):
    label = "live"
