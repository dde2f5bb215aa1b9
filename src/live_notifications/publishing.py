"""Turn every admin ``LogEntry`` into one event in the outbox, in its transaction.

The how-to publishes to Redis from a ``post_save`` receiver. Here the event is
written to the outbox table (:class:`~live_notifications.models.OutboxEvent`)
in the same transaction as the ``LogEntry``, so that:

* a change that is rolled back is never announced, and one that commits is
  always announced, even while Redis is unreachable: the relay copies the
  outbox to Redis's event log, catching up after outages;
* since Django 5.1 the admin logs a bulk deletion ("Delete selected") with
  ``bulk_create()``, which sends no ``post_save``; :func:`connect` wraps
  ``LogEntryManager.log_actions`` so those entries are announced too.

Publishing doesn't talk to Redis at all: an admin save needs only PostgreSQL.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry, LogEntryManager
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.db.models.signals import post_save

from live_notifications.shared.events import AccessChange, AppEvent, Event

from . import metrics
from .models import OutboxEvent

logger = logging.getLogger(__name__)

ACTIONS = {ADDITION: "added", CHANGE: "changed", DELETION: "deleted"}
# The admin leaves the change message empty for deletions.
FALLBACK_MESSAGES = {ADDITION: "Added.", CHANGE: "Changed.", DELETION: "Deleted."}

# Set on a LogEntry once its event is scheduled, so that no path announces it twice.
_SCHEDULED = "_notifications_scheduled"


#: PostgreSQL channel the relay listens on; NOTIFY is delivered at commit.
OUTBOX_CHANNEL = "live_notifications_outbox"


def event_for(entry: LogEntry) -> Event | None:
    """Describe ``entry`` as an :class:`~shared.events.Event`.

    Returns ``None`` for an entry without a content type: nobody could be
    allowed to see it. The admin always sets one.
    """
    if entry.content_type_id is None:
        return None
    content_type = ContentType.objects.get_for_id(entry.content_type_id)
    flag = entry.action_flag
    return Event(
        model=str(content_type.name),
        object=entry.object_repr,
        message=entry.get_change_message() or FALLBACK_MESSAGES.get(flag, ""),
        timestamp=entry.action_time.isoformat(),
        user=entry.user.get_username(),
        content_type_id=entry.content_type_id,
        # log_actions() sets the raw primary key; the column stores text.
        object_id=None if entry.object_id is None else str(entry.object_id),
        action=ACTIONS.get(flag, "changed"),
    )


def publish(*events: Event | AppEvent | AccessChange) -> None:
    """Write ``events`` to the outbox in the current transaction.

    They are announced if and when it commits: the relay, woken by NOTIFY
    at the commit, gives them their place in the log. Outside a transaction
    (autocommit), that is at once.
    """
    OutboxEvent.objects.bulk_create(
        [OutboxEvent(payload=event.encode().decode()) for event in events]
    )
    with connection.cursor() as cursor:
        cursor.execute(f"NOTIFY {OUTBOX_CHANNEL}")
    transaction.on_commit(functools.partial(metrics.count_published, len(events)))


def schedule(entries: list[LogEntry]) -> None:
    """Publish the events for ``entries``, each once, in the current transaction."""
    events = []
    for entry in entries:
        if getattr(entry, _SCHEDULED, False):
            continue
        setattr(entry, _SCHEDULED, True)
        event = event_for(entry)
        if event is None:
            logger.warning("log entry %s has no content type: not published", entry.pk)
            continue
        events.append(event)
    if events:
        publish(*events)


def _on_log_entry_saved(sender: type[LogEntry], instance: LogEntry, **kwargs: Any) -> None:
    if kwargs.get("created") and not kwargs.get("raw"):
        schedule([instance])


def _announcing(log_actions: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(log_actions)
    def wrapper(self: LogEntryManager, *args: Any, **kwargs: Any) -> Any:
        result = log_actions(self, *args, **kwargs)
        entries = [result] if isinstance(result, LogEntry) else result
        schedule(list(entries))  # only the bulk-created ones are not scheduled yet
        return result

    wrapper.announcing = True  # type: ignore[attr-defined]
    return wrapper


def connect() -> None:
    """Start announcing log entries. Called once from ``AppConfig.ready()``."""
    post_save.connect(_on_log_entry_saved, sender=LogEntry, dispatch_uid=__name__)
    if not getattr(LogEntryManager.log_actions, "announcing", False):
        LogEntryManager.log_actions = _announcing(LogEntryManager.log_actions)  # type: ignore[method-assign]
