"""Turn every admin ``LogEntry`` into one event on the bus, after commit.

The how-to publishes from a ``post_save`` receiver. Two things are added:

* the event is published only once the transaction commits, so a change that
  is rolled back is never announced;
* since Django 5.1 the admin logs a bulk deletion ("Delete selected") with
  ``bulk_create()``, which sends no ``post_save``; :func:`connect` wraps
  ``LogEntryManager.log_actions`` so those entries are announced too.

Publishing never makes the admin save fail: when Redis is unreachable the
failure is logged and counted (:data:`counters`), and the event is dropped.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry, LogEntryManager
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models.signals import post_save
from django_redis import get_redis_connection

from shared.events import CHANNEL, Event

logger = logging.getLogger(__name__)

ACTIONS = {ADDITION: "added", CHANGE: "changed", DELETION: "deleted"}
# The admin leaves the change message empty for deletions.
FALLBACK_MESSAGES = {ADDITION: "Added.", CHANGE: "Changed.", DELETION: "Deleted."}

# Set on a LogEntry once its event is scheduled, so that no path announces it twice.
_SCHEDULED = "_notifications_scheduled"


class Counters:
    """Per-process counts of publishing outcomes (gunicorn: per worker)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.published = 0
        self.failed = 0

    def add(self, *, published: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.published += published
            self.failed += failed


counters = Counters()


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


def publish(event: Event) -> bool:
    """Publish ``event`` on the bus now. Return whether Redis accepted it."""
    try:
        get_redis_connection("default").publish(CHANNEL, event.encode())
    except Exception:
        counters.add(failed=1)
        logger.exception(
            "event not published: model=%s object_id=%s failures=%d",
            event.model,
            event.object_id,
            counters.failed,
        )
        return False
    counters.add(published=1)
    return True


def schedule(entry: LogEntry) -> None:
    """Publish the event for ``entry`` when the current transaction commits.

    The event is built now, inside the transaction, while the data is there.
    """
    if getattr(entry, _SCHEDULED, False):
        return
    setattr(entry, _SCHEDULED, True)
    event = event_for(entry)
    if event is None:
        logger.warning("log entry %s has no content type: not published", entry.pk)
        return
    transaction.on_commit(functools.partial(publish, event), robust=True)


def _on_log_entry_saved(sender: type[LogEntry], instance: LogEntry, **kwargs: Any) -> None:
    if kwargs.get("created") and not kwargs.get("raw"):
        schedule(instance)


def _announcing(log_actions: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(log_actions)
    def wrapper(self: LogEntryManager, *args: Any, **kwargs: Any) -> Any:
        result = log_actions(self, *args, **kwargs)
        entries = [result] if isinstance(result, LogEntry) else result
        for entry in entries:  # only the bulk-created ones are not scheduled yet
            schedule(entry)
        return result

    wrapper.announcing = True  # type: ignore[attr-defined]
    return wrapper


def connect() -> None:
    """Start announcing log entries. Called once from ``AppConfig.ready()``."""
    post_save.connect(_on_log_entry_saved, sender=LogEntry, dispatch_uid=__name__)
    if not getattr(LogEntryManager.log_actions, "announcing", False):
        LogEntryManager.log_actions = _announcing(LogEntryManager.log_actions)  # type: ignore[method-assign]
