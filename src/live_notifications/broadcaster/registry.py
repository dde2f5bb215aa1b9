"""Connected clients, indexed by what they may see, to find an event's recipients fast."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

from live_notifications.shared.events import Audience

from .auth import Access, UserKey

C = TypeVar("C", bound=Hashable)


class Registry(Generic[C]):
    """Finds the recipients of events without scanning every connection.

    Connections are grouped by their :class:`~.auth.Access` (most users
    share one), and those groups are indexed by content type, permission
    and group; connections are also indexed by user. An event's recipients
    cost O(accesses that match + recipients), and a connection costs the
    same few entries whatever the permissions and groups of its user.
    """

    def __init__(self) -> None:
        self._by_access: dict[Access, set[C]] = {}
        self._by_content_type: dict[int, set[Access]] = {}
        self._by_permission: dict[str, set[Access]] = {}
        self._by_group: dict[int, set[Access]] = {}
        #: Superusers' accesses: every permission and content type matches them.
        self._superusers: set[Access] = set()
        self._by_user: dict[UserKey, list[C]] = {}
        self._registered: dict[C, tuple[UserKey, Access]] = {}

    def add(self, connection: C, user: UserKey, access: Access) -> None:
        """Register ``connection``, of ``user``, for the events ``access`` lets it see."""
        self.remove(connection)
        self._registered[connection] = (user, access)
        self._by_user.setdefault(user, []).append(connection)
        connections = self._by_access.get(access)
        if connections is None:
            connections = self._by_access[access] = set()
            self._index(access, add=True)
        connections.add(connection)

    def remove(self, connection: C) -> None:
        """Forget ``connection``; nothing happens if it isn't registered."""
        if connection not in self._registered:
            return
        user, access = self._registered.pop(connection)
        mine = self._by_user[user]
        mine.remove(connection)
        if not mine:
            del self._by_user[user]
        connections = self._by_access[access]
        connections.discard(connection)
        if not connections:
            del self._by_access[access]
            self._index(access, add=False)

    def _index(self, access: Access, *, add: bool) -> None:
        entries: list[tuple[dict[object, set[Access]], Iterable[object]]] = [
            (self._by_content_type, access.content_types),  # type: ignore[list-item]
            (self._by_permission, access.permissions),  # type: ignore[list-item]
            (self._by_group, access.groups),  # type: ignore[list-item]
        ]
        for index, keys in entries:
            for key in keys:
                if add:
                    index.setdefault(key, set()).add(access)
                    continue
                accesses = index[key]
                accesses.discard(access)
                if not accesses:
                    del index[key]
        if access.superuser:
            (self._superusers.add if add else self._superusers.discard)(access)

    def accesses(self, audience: Audience) -> set[Access]:
        """The accesses whose connections are all in ``audience`` (users aside)."""
        if audience.everyone:
            return set(self._by_access)
        found: set[Access] = set()
        for content_type in audience.content_types:
            found.update(self._by_content_type.get(content_type, ()))
        for permission in audience.permissions:
            found.update(self._by_permission.get(permission, ()))
        for group in audience.groups:
            found.update(self._by_group.get(group, ()))
        if audience.content_types or audience.permissions:
            found.update(self._superusers)
        return found

    def recipients(self, audience: Audience) -> Iterable[C]:
        """The connections in ``audience``, each once.

        Don't add or remove connections while iterating.
        """
        found = self.accesses(audience)
        by_access = (self._by_access[access] for access in found)
        return itertools.chain(
            itertools.chain.from_iterable(by_access), self.users(audience, found)
        )

    def users(self, audience: Audience, found: set[Access]) -> Iterator[C]:
        """The connections of ``audience``'s users whose access isn't in ``found``."""
        for user in audience.users:
            for connection in self._by_user.get(user, ()):
                if self._registered[connection][1] not in found:
                    yield connection

    def due(self, audiences: Sequence[Audience]) -> dict[tuple[int, ...], list[Iterable[C]]]:
        """Who receives which of consecutive events: the indexes of the
        events each connection receives, with the connections receiving them.

        Connections sharing an access receive the same events, unless some
        are addressed to their user: they are looked at one by one only then.
        """
        by_access: dict[Access, list[int]] = {}
        personal: dict[C, list[int]] = {}
        for i, audience in enumerate(audiences):
            found = self.accesses(audience)
            for access in found:
                by_access.setdefault(access, []).append(i)
            for connection in self.users(audience, found):
                personal.setdefault(connection, []).append(i)
        # A connection addressed as a user, whose access receives others of
        # these events, gets them all in one write of its own, in order.
        apart: dict[Access, set[C]] = {}
        for connection, indexes in personal.items():
            access = self._registered[connection][1]
            if access in by_access:
                personal[connection] = sorted({*indexes, *by_access[access]})
                apart.setdefault(access, set()).add(connection)
        due: dict[tuple[int, ...], list[Iterable[C]]] = {}
        for access, indexes in by_access.items():
            connections = self._by_access[access]
            if access in apart:
                connections = connections - apart[access]
            due.setdefault(tuple(indexes), []).append(connections)
        for connection, indexes in personal.items():
            due.setdefault(tuple(indexes), []).append((connection,))
        return due

    def __len__(self) -> int:
        return len(self._registered)

    def __contains__(self, connection: object) -> bool:
        return connection in self._registered

    def __iter__(self) -> Iterator[C]:
        return iter(list(self._registered))
