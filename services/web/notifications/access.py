"""Announce access changes in the event log, in the transaction that makes them.

Broadcasters compute what a user may see when the user connects; these
announcements tell them when that changes, in the same ordered log as the
events, so that no event after the change reaches a connection it excludes.

Seen: whatever goes through the ORM's ``save()``, ``delete()`` and
many-to-many ``add()``/``remove()``/``set()``/``clear()`` on users, groups
and their permissions, from the admin, a shell, a command or a view. Not
seen: ``QuerySet.update()``, ``bulk_update()``, raw SQL, and permissions that
come from a custom authentication backend; after such a change, call
:func:`announce` with the users concerned.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import Group, User
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from shared.events import CHANGED, REVOKED, AccessChange

from .publishing import publish

# Stashed on instances between pre_ and post_ signals.
_BEFORE = "_notifications_access_before"
_MEMBERS = "_notifications_members"


def announce(users: Iterable[int], *, revoked: bool = False) -> None:
    """Tell the broadcasters that these users' access changed.

    ``revoked``: close their connections (as for a deactivated user);
    otherwise recompute what they may see. Takes effect when the current
    transaction commits, in log order with the events.
    """
    pks = tuple(sorted(set(users)))
    if pks:
        publish(AccessChange(access=REVOKED if revoked else CHANGED, users=pks))


def _user_before(sender: type[User], instance: User, **kwargs: Any) -> None:
    fields = kwargs.get("update_fields")
    if (
        instance.pk is None
        or kwargs.get("raw")
        or (fields is not None and set(fields) <= {"last_login"})
    ):
        return
    before = (
        User.objects.filter(pk=instance.pk)
        .values_list("is_active", "is_superuser", "password")
        .first()
    )
    setattr(instance, _BEFORE, before)


def _user_saved(sender: type[User], instance: User, **kwargs: Any) -> None:
    before = getattr(instance, _BEFORE, None)
    if before is None:
        return
    delattr(instance, _BEFORE)
    was_active, was_superuser, old_password = before
    if (was_active and not instance.is_active) or old_password != instance.password:
        announce([instance.pk], revoked=True)  # Django's "log out everywhere" too
    elif was_superuser != instance.is_superuser:
        announce([instance.pk])


def _user_deleted(sender: type[User], instance: User, **kwargs: Any) -> None:
    announce([instance.pk], revoked=True)


def _group_deleting(sender: type[Group], instance: Group, **kwargs: Any) -> None:
    setattr(instance, _MEMBERS, list(instance.user_set.values_list("pk", flat=True)))


def _group_deleted(sender: type[Group], instance: Group, **kwargs: Any) -> None:
    announce(getattr(instance, _MEMBERS, ()))


def _users_of(model: type[Any], pks: Iterable[int]) -> list[int]:
    """The users that ``pks`` of ``model`` (users, groups or permissions) stand for."""
    pks = list(pks)
    if model is User:
        return pks
    if model is Group:
        return list(User.objects.filter(groups__in=pks).values_list("pk", flat=True))
    return list(  # permissions: their users, directly and through groups
        User.objects.filter(user_permissions__in=pks)
        .values_list("pk", flat=True)
        .union(User.objects.filter(groups__permissions__in=pks).values_list("pk", flat=True))
    )


def _relation_changed(
    sender: type[Any],
    instance: Any,
    action: str,
    reverse: bool,
    model: type[Any],
    pk_set: set[int] | None,
    **kwargs: Any,
) -> None:
    """users ⇄ groups, users ⇄ permissions, groups ⇄ permissions changed.

    ``instance`` is on one side, ``pk_set`` the other side's keys (``None``
    for a ``clear()``, whose keys are read before it, in ``pre_clear``).
    """
    if action == "pre_clear":
        setattr(instance, _MEMBERS, _users_of(type(instance), [instance.pk]))
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if action == "post_clear":
        announce(getattr(instance, _MEMBERS, ()))
        return
    if isinstance(instance, User):  # user.groups or user.user_permissions
        announce([instance.pk])
    elif model is User:  # group.user_set or permission.user_set
        announce(pk_set or ())
    elif isinstance(instance, Group):  # group.permissions
        announce(_users_of(Group, [instance.pk]))
    else:  # permission.group_set
        announce(_users_of(Group, pk_set or ()))


def connect() -> None:
    """Start announcing access changes. Called once from ``AppConfig.ready()``."""
    pre_save.connect(_user_before, sender=User, dispatch_uid=f"{__name__}.user_before")
    post_save.connect(_user_saved, sender=User, dispatch_uid=f"{__name__}.user_saved")
    post_delete.connect(_user_deleted, sender=User, dispatch_uid=f"{__name__}.user_deleted")
    pre_delete.connect(_group_deleting, sender=Group, dispatch_uid=f"{__name__}.group_deleting")
    post_delete.connect(_group_deleted, sender=Group, dispatch_uid=f"{__name__}.group_deleted")
    for through in (User.groups.through, User.user_permissions.through, Group.permissions.through):
        m2m_changed.connect(
            _relation_changed, sender=through, dispatch_uid=f"{__name__}.{through.__name__}"
        )
