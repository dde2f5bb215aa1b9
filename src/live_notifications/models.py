"""The event log's durable half, in PostgreSQL (see :mod:`shared.eventlog`)."""

from __future__ import annotations

import secrets

from django.db import models


def new_epoch() -> str:
    """A fresh name for a history: 8 random hex digits."""
    return secrets.token_hex(4)


class EventLog(models.Model):
    """The one row naming this database's history of events.

    Event ids carry the epoch, so ids from another database (restored, or
    created anew) are never mistaken for positions in this one.
    """

    epoch = models.CharField(max_length=32, default=new_epoch)

    class Meta:
        verbose_name = "event log"


class OutboxEvent(models.Model):
    """An event, written in the same transaction as the change it announces.

    Rows are committed with no position; the relay gives each one its place
    in the log (``position_ms``, ``position_seq``: the Redis stream id), in
    the order it finds them, then copies it to Redis. Rows are kept for the
    history's length, so that Redis can be refilled after losing its data.
    """

    #: The event's JSON (:class:`shared.events.Event`), without its id.
    payload = models.TextField()
    created = models.DateTimeField(auto_now_add=True)
    position_ms = models.BigIntegerField(null=True)
    position_seq = models.BigIntegerField(null=True)

    class Meta:
        verbose_name = "outbox event"
        constraints = [
            models.UniqueConstraint(fields=["position_ms", "position_seq"], name="unique_position")
        ]
        indexes = [
            models.Index(
                fields=["id"],
                condition=models.Q(position_ms__isnull=True),
                name="outbox_unrelayed",
            )
        ]
