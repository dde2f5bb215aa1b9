"""Who tokens belong to, checked in batches, with what was read kept for reconnections.

Checking each token on its own, as the how-to does (``sesame.utils.get_user``
and then what the user may see), costs a thread hop and several queries per
token. Here, tokens that arrive together are checked together: one thread
call, one query for all the users they name, then
:func:`.auth.access_of_users` for them all (two more). What was read, the
user's row and what the user may see, is kept per user, so that a user seen
recently reconnects with no query and no thread hop: a reconnect storm of
known users costs the database nothing.

Every check of ``sesame.utils.get_user`` is kept, made by django-sesame's own
``parse_token``, with the WebSocket tokens' scope and lifetime
(:mod:`live_notifications.conf`) and ``SESAME_*`` settings (signature,
revocation key: password hash, and whatever else they include), and
the backend's ``user_can_authenticate`` (active users). Only the user's row
may come from the cache, and only to accept: a token that the cached row
refuses (a password changed a moment ago, say) is checked against the
database, so that a cached row never refuses a valid token; one refused
before the user is needed (malformed, expired) costs nothing at all. Invalid
tokens store nothing and evict nothing.

Why a cached read is as good as a fresh one
-------------------------------------------

A client's access changes after ``seen``, the log's head read before it
authenticates, are applied to it whatever its identity says
(:meth:`.fanout.Fanout.follow`). So an identity is good enough if every
access change it doesn't reflect is in the log after ``seen``. Access
changes are committed before they reach the log (the outbox is relayed after
the commit), and :meth:`Identities.forget` is called for each one in the same
step of the event loop as the log's head moves past it. Take a read R, from
the database, and a change X that R doesn't reflect:

- X committed after R started, so its entry is read after R started. If it
  is read while R is in flight, R's result is not stored (it still answers
  the tokens that asked: their ``seen`` is before X). If it is read after R
  was stored, it evicts R's result. Either way, a lookup that finds R in the
  cache happens before X's entry is read, when the head, and so the ``seen``
  of the client looking up (read before), is still before X.
- X can't have been read before R started: it would have been committed
  before R started, and R would reflect it.

A token is queued after its client's ``seen`` was read, and a batch takes
only tokens already queued when it starts: a fresh read too starts after
``seen``, and the same argument applies with no cache at all.

Changes the log doesn't see (``QuerySet.update()``, raw SQL: see
:mod:`live_notifications.access`) are not applied to open connections, and
reach new ones within ``cache_seconds``, when the entry expires.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Collection
from typing import Any, Final

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections
from sesame import settings as sesame_settings
from sesame.backends import ModelBackend
from sesame.tokens import parse_token

from ..conf import settings as live_settings
from .auth import Identity, UserKey, access_of_users

logger = logging.getLogger(__name__)

#: What blocking work runs in: a coroutine function like :func:`asyncio.to_thread`.
ToThread = Callable[..., Any]


@dataclasses.dataclass(frozen=True, slots=True)
class _Known:
    """What was read of a user whose token was valid, and until when it may be used."""

    #: The row that tokens are verified against (their revocation key).
    user: AbstractBaseUser
    identity: Identity
    #: ``time.monotonic()`` after which it's read again: from when its read started.
    expires: float


@dataclasses.dataclass(slots=True)
class _Request:
    token: str
    #: The primary key the token names (checked: its signature isn't, yet).
    user_id: Any
    future: asyncio.Future[Identity | None]


class _Miss:
    """:meth:`Identities._from_cache` couldn't tell: ask the database."""


_MISS: Final = _Miss()


class Identities:
    """Who tokens authenticate: in batches, with the users read recently kept.

    Only the event loop uses it; the database is read in a thread, one
    batch at a time, at most ``batch_size`` tokens each. ``cache_size``
    users are kept, least recently used dropped first, each at most
    ``cache_seconds``; a size or a duration of 0 keeps none.
    """

    def __init__(
        self,
        *,
        batch_size: int = 500,
        cache_size: int = 10_000,
        cache_seconds: float = 60.0,
        to_thread: ToThread = asyncio.to_thread,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The cache is keyed, and forget() called, by primary key.
        if sesame_settings.PRIMARY_KEY_FIELD not in ("pk", get_user_model()._meta.pk.name):
            raise ImproperlyConfigured("the broadcaster needs SESAME_PRIMARY_KEY_FIELD = 'pk'")
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.cache_seconds = cache_seconds
        self.to_thread = to_thread
        self.clock = clock
        self.scope: str = live_settings.TOKEN_SCOPE
        self.max_age: float = live_settings.TOKEN_MAX_AGE
        self._backend = ModelBackend()
        #: Users whose token was valid, least recently used first.
        self._known: collections.OrderedDict[UserKey, _Known] = collections.OrderedDict()
        #: Tokens waiting for the next batch.
        self._queue: collections.deque[_Request] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        #: While a batch reads the database: the users forgotten since it
        #: started, whose read must not be stored. ``None`` between batches.
        self._forgotten: set[UserKey] | None = None
        #: Tokens answered from what was kept, with no query.
        self.hits = 0

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._known

    async def identify(self, token: str) -> Identity | None:
        """Return who ``token`` authenticates, or ``None`` if it's not valid.

        As :func:`.auth.identify`: invalid means malformed, expired, of
        another scope, with a bad signature or revocation key (a password
        changed since), or for a user who doesn't exist or is inactive.

        Raises:
            django.db.DatabaseError: the database can't be reached; every
                token of the batch gets it.
        """
        answer = self.check(token)
        return await answer if isinstance(answer, asyncio.Future) else answer

    def check(self, token: str) -> Identity | asyncio.Future[Identity | None] | None:
        """:meth:`identify` without a coroutine: the answer now if it needs no query.

        Otherwise a future of it, resolved by the next batch: the caller
        needs no task of its own to wait.
        """
        known, user_id = self._from_cache(token)
        if not isinstance(known, _Miss):
            return known
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Identity | None] = loop.create_future()
        self._queue.append(_Request(token, user_id, future))
        if self._worker is None:
            self._worker = loop.create_task(self._work())
        return future

    def forget(self, user_ids: Collection[UserKey]) -> None:
        """Read these users again next time: their access changed.

        Call it for every access change of the log, revoked or changed, when
        it is read, before any later entry (see the module's docstring).
        """
        for user_id in user_ids:
            self._known.pop(user_id, None)
        if self._forgotten is not None:
            self._forgotten.update(user_ids)

    # In the event loop.

    def _from_cache(self, token: str) -> tuple[Identity | _Miss | None, Any]:
        """Check ``token`` with no query, if its user is known or isn't needed.

        Returns the answer, or :data:`_MISS`, and the primary key it names.
        """
        asked: list[Any] = []
        found: list[_Known] = []

        def get_user(user_id: Any) -> AbstractBaseUser | None:
            asked.append(user_id)
            known = self._known.get(user_id)
            if known is None:
                return None
            if known.expires <= self.clock():
                del self._known[user_id]
                return None
            found.append(known)
            return known.user

        user = self._parse(token, get_user)
        if not asked:  # refused before its user was needed: malformed, expired
            return None, None
        if user is None or not found:
            # Unknown, or refused by the row kept: the database has the last word.
            return _MISS, asked[0]
        self._known.move_to_end(asked[0])
        self.hits += 1
        return found[0].identity, asked[0]

    def _parse(
        self, token: str, get_user: Callable[[Any], AbstractBaseUser | None]
    ) -> AbstractBaseUser | None:
        """django-sesame's own checks, with the WebSocket scope."""
        try:
            user: AbstractBaseUser | None = parse_token(
                token, get_user, scope=self.scope, max_age=self.max_age
            )
        except NotImplementedError:  # a v1 token: they have no scope, so are never valid here
            return None
        return user

    async def _work(self) -> None:
        """Check batches of the tokens queued, one at a time, until none is left."""
        batch: list[_Request] = []
        try:
            while self._queue:
                size = min(self.batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(size)]
                await self._check(batch)
                batch = []
        finally:
            self._worker = None
            self._forgotten = None
            # Cancelled (the loop is closing): no waiter is left hanging.
            for request in [*batch, *self._queue]:
                request.future.cancel()
            self._queue.clear()

    async def _check(self, batch: list[_Request]) -> None:
        # Forgotten from now on: possibly not reflected in what is read.
        self._forgotten = set()
        started = self.clock()
        try:
            try:
                identities, known = await self.to_thread(
                    self._read, [(r.token, r.user_id) for r in batch]
                )
            finally:
                forgotten, self._forgotten = self._forgotten, None
        except Exception as exc:  # DatabaseError, mostly: for every waiter to handle
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        expires = started + self.cache_seconds
        for user_id, (user, identity) in known.items():
            if user_id not in forgotten:
                self._store(user_id, _Known(user, identity, expires))
        for request, identity in zip(batch, identities, strict=True):
            if not request.future.done():  # its client may have left
                request.future.set_result(identity)

    def _store(self, user_id: UserKey, known: _Known) -> None:
        if self.cache_size <= 0 or self.cache_seconds <= 0:
            return
        self._known[user_id] = known
        self._known.move_to_end(user_id)
        while len(self._known) > self.cache_size:
            self._known.popitem(last=False)

    # In a thread.

    def _read(
        self, requests: list[tuple[str, Any]]
    ) -> tuple[list[Identity | None], dict[UserKey, tuple[AbstractBaseUser, Identity]]]:
        """Check tokens against the database: one query for the users, one for access.

        Returns the identity of each token, in order, and the users whose
        token was valid, to keep.
        """
        close_old_connections()  # as Django does around a request: a stale one reconnects
        try:
            users = get_user_model()._default_manager.in_bulk({user_id for _, user_id in requests})

            def get_user(user_id: Any) -> AbstractBaseUser | None:
                user = users.get(user_id)
                # As sesame's backend: unknown and inactive users are refused.
                if user is None or not self._backend.user_can_authenticate(user):
                    return None
                return user

            valid = [self._parse(token, get_user) for token, _ in requests]
            superuser = {
                user.pk: getattr(user, "is_superuser", False) for user in valid if user is not None
            }
            access = access_of_users(superuser) if superuser else {}
            identities: list[Identity | None] = []
            known: dict[UserKey, tuple[AbstractBaseUser, Identity]] = {}
            for user in valid:
                if user is None:
                    identities.append(None)
                    continue
                identity = Identity(user.pk, user.get_username(), access[user.pk])
                identities.append(identity)
                known[user.pk] = (user, identity)
            return identities, known
        finally:
            close_old_connections()
