"""Connected clients, indexed by the content types each may see."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Iterator
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


class Registry(Generic[C]):
    """Finds the recipients of an event without scanning every connection.

    A connection registered with a set of content type IDs is indexed under
    each of them; one registered with ``None`` (a superuser) receives every
    event, including those of content types created after it connected.
    """

    def __init__(self) -> None:
        self._by_content_type: dict[int, set[C]] = {}
        self._everything: set[C] = set()
        self._content_types: dict[C, frozenset[int] | None] = {}

    def add(self, connection: C, content_types: frozenset[int] | None) -> None:
        """Register ``connection`` for events of ``content_types`` (``None``: all)."""
        self.remove(connection)
        self._content_types[connection] = content_types
        if content_types is None:
            self._everything.add(connection)
            return
        for content_type in content_types:
            self._by_content_type.setdefault(content_type, set()).add(connection)

    def remove(self, connection: C) -> None:
        """Forget ``connection``; nothing happens if it isn't registered."""
        if connection not in self._content_types:
            return
        content_types = self._content_types.pop(connection)
        if content_types is None:
            self._everything.discard(connection)
            return
        for content_type in content_types:
            connections = self._by_content_type[content_type]
            connections.discard(connection)
            if not connections:
                del self._by_content_type[content_type]

    def recipients(self, content_type: int) -> Iterable[C]:
        """The connections allowed to see an event of ``content_type``.

        Costs O(recipients). Don't add or remove connections while iterating.
        """
        return itertools.chain(self._by_content_type.get(content_type, ()), self._everything)

    def __len__(self) -> int:
        return len(self._content_types)

    def __contains__(self, connection: object) -> bool:
        return connection in self._content_types

    def __iter__(self) -> Iterator[C]:
        return iter(list(self._content_types))
