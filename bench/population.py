"""The bench's users, tokens and events, through the Django project's own code.

Import it after ``django.setup()``. Users are ``bench000000``, ``bench000001``…;
those allowed to see the events belong to a group with ``auth.view_group``,
and the events are about groups, so both servers find them visible through
Django's ``ModelBackend``, as an administrator's change would be. Events are
published exactly as the admin publishes them
(:func:`live_notifications.publishing.publish` in a transaction: outbox,
relay, Redis), and carry their sequence number in ``object_id``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import string
import time

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import get_random_string

from live_notifications.models import OutboxEvent
from live_notifications.publishing import publish
from live_notifications.shared.events import AppEvent, Audience, Event
from live_notifications.tokens import token_for

from . import audiences

GROUP = "bench viewers"
#: Not a password: the marker of an unusable one, as Django's own starts with "!".
UNUSABLE_PASSWORD = "!bench"  # noqa: S105


@dataclasses.dataclass(frozen=True)
class Population:
    #: Users in order, and whether each may see the events.
    users: list[User]
    allowed: list[bool]
    #: The content type of the events.
    content_type_id: int
    #: The group of the allowed users, which holds ``auth.view_group``.
    group_id: int


def is_allowed(index: int, share: float) -> bool:
    """Whether user ``index`` may see the events: ``share`` of them, evenly spread."""
    return math.floor((index + 1) * share) > math.floor(index * share)


def prepare(count: int, share: float) -> Population:
    """Migrate the database and create ``count`` users, ``share`` of them allowed."""
    call_command("migrate", interactive=False, verbosity=0)
    content_type = ContentType.objects.get_for_model(Group)
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.add(Permission.objects.get(content_type=content_type, codename="view_group"))
    existing = User.objects.filter(username__startswith="bench").count()
    User.objects.bulk_create(
        [
            User(username=f"bench{index:06d}", password=UNUSABLE_PASSWORD)
            for index in range(existing, count)
        ],
        batch_size=5000,
    )
    users = list(User.objects.filter(username__startswith="bench").order_by("username")[:count])
    allowed = [is_allowed(index, share) for index in range(len(users))]
    membership = User.groups.through
    membership.objects.bulk_create(
        [
            membership(user_id=u.pk, group_id=group.pk)
            for u, a in zip(users, allowed, strict=True)
            if a
        ],
        batch_size=5000,
        ignore_conflicts=True,
    )
    return Population(users, allowed, content_type.pk, group.pk)


def hellos(users: list[User], *, resuming: bool) -> list[str]:
    """Each user's first message: a fresh token, bare (the how-to's protocol) or in
    the JSON form of the project's page, which the broadcaster welcomes."""
    tokens = [token_for(user) for user in users]
    if not resuming:
        return tokens
    return [json.dumps({"token": token, "last_id": None}) for token in tokens]


def sessions(users: list[User], count: int) -> list[str]:
    """``count`` logged-in sessions, for ``users`` in turn, as ``django.contrib.auth.login``
    leaves them (the user, the backend, the password's hash); their keys.

    Written in bulk: logging in through the form would spend the run on
    password hashing, which a reconnecting client doesn't do.
    """
    store = SessionStore()
    expiry = timezone.now() + datetime.timedelta(seconds=settings.SESSION_COOKIE_AGE)
    backend = settings.AUTHENTICATION_BACKENDS[0]  # the password login's
    rows = []
    for index in range(count):
        user = users[index % len(users)]
        data = {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: backend,
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        key = get_random_string(32, string.ascii_lowercase + string.digits)
        rows.append(Session(session_key=key, session_data=store.encode(data), expire_date=expiry))
    Session.objects.bulk_create(rows, batch_size=5000)
    return [row.session_key for row in rows]


def publish_events(
    first: int, count: int, people: Population, *, mixed: list[User] | None = None
) -> float:
    """Publish events ``first`` to ``first + count - 1`` in one transaction, as the
    admin's bulk actions do; return the time its COMMIT was sent.

    ``mixed``: the run's allowed users, in rank order, for the mixed-audience
    run (:mod:`.audiences`); its app events are built as ``publish()``
    builds them, without its checks' queries, which would slow the driver
    and so change the rate the broadcaster is measured at.

    Read before the COMMIT, not after it returns: the commit wakes the relay,
    which shares the driver's CPU and may run first, so a time read after
    came up to 4 ms late (the relay's position before it), flattering every
    latency. Read before, a latency includes the COMMIT itself.
    """
    timestamp = timezone.now().isoformat()
    events = [_event(seq, timestamp, people, mixed) for seq in range(first, first + count)]
    with transaction.atomic():
        publish(*events)
        committing = time.monotonic()
    return committing


def _event(
    seq: int, timestamp: str, people: Population, mixed: list[User] | None
) -> Event | AppEvent:
    kind = audiences.KINDS[seq % len(audiences.KINDS)] if mixed else "admin"
    if kind == "admin":
        return Event(
            model="group",
            object=f"bench group {seq}",
            message="Changed name.",
            timestamp=timestamp,
            user="bench",
            content_type_id=people.content_type_id,
            object_id=str(seq),
            action="changed",
        )
    assert mixed is not None
    if kind == "group":
        audience = Audience(groups=frozenset([people.group_id]))
    elif kind == "permission":
        audience = Audience(permissions=frozenset(["auth.view_group"]))
    else:
        rank = audiences.recipient_rank(seq, len(mixed))
        assert rank is not None
        audience = Audience(users=frozenset([mixed[rank].pk]))
    # The sequence number where the clients look for it (bench.wsclient).
    data = {"object_id": str(seq)}
    return AppEvent(event=f"bench.{kind}", data=data, timestamp=timestamp, audience=audience)


def log_times(first: int, end: int) -> dict[int, float]:
    """When the relay gave events ``first`` to ``end - 1`` their place in the log,
    as Unix times (to the millisecond: a position is the stream id's time).

    Read from the outbox's newest rows; an event without a position is left out.
    """
    rows = OutboxEvent.objects.filter(position_ms__isnull=False).order_by("-id")
    times: dict[int, float] = {}
    # Newest first: an earlier bench on this database used the same numbers.
    for payload, position_ms in rows.values_list("payload", "position_ms")[: end - first + 1000]:
        data = json.loads(payload)
        seq = data.get("object_id") or (data.get("data") or {}).get("object_id")
        if seq is not None and first <= int(seq) < end:
            times.setdefault(int(seq), (position_ms or 0) / 1000)
    return times
