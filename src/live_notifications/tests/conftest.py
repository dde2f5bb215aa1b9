from __future__ import annotations

import pytest

from live_notifications.models import OutboxEvent
from live_notifications.shared.events import Event


class Outbox:
    """The events written to the outbox, read in the order they were written."""

    def __init__(self) -> None:
        self.seen = 0

    def _rows(self) -> list[OutboxEvent]:
        return list(OutboxEvent.objects.order_by("id")[self.seen :])

    def next(self) -> Event:
        rows = self._rows()
        assert rows, "nothing more in the outbox"
        self.seen += 1
        return Event.decode(rows[0].payload)

    def assert_nothing_more(self) -> None:
        assert not self._rows(), [row.payload for row in self._rows()]


@pytest.fixture
def events() -> Outbox:
    return Outbox()
