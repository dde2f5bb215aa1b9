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

from collections.abc import Hashable, Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Model
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from live_notifications.shared.events import CHANGED, REVOKED, AccessChange

from . import usermodel
from .publishing import publish

# Stashed on instances between pre_ and post_ signals.
_BEFORE = "_notifications_access_before"
_MEMBERS = "_notifications_members"
#: What revokes a user's access when it changes, or changes it: the fields
#: of ``AbstractUser`` that the user model has.
_REVOKING = ("is_active", "password")
_CHANGING = ("is_superuser",)


def announce(users: Iterable[Hashable], *, revoked: bool = False) -> None:
    """Tell the broadcasters that these users' access changed.

    ``users`` are primary keys of the user model (integers, UUIDs...).
    ``revoked``: close their connections (as for a deactivated user);
    otherwise recompute what they may see. Takes effect when the current
    transaction commits, in log order with the events.
    """
    pks = tuple(sorted(set(users)))  # type: ignore[type-var]  # a model's keys: one type
    if pks:
        publish(AccessChange(access=REVOKED if revoked else CHANGED, users=pks))


def _user_before(sender: type[Model], instance: Any, **kwargs: Any) -> None:
    fields = kwargs.get("update_fields")
    if (
        instance.pk is None
        or kwargs.get("raw")
        or (fields is not None and set(fields) <= {"last_login"})
    ):
        return
    watched = (*usermodel.fields(sender, _REVOKING), *usermodel.fields(sender, _CHANGING))
    before = sender._default_manager.filter(pk=instance.pk).values(*watched).first()
    setattr(instance, _BEFORE, before)


def _user_saved(sender: type[Model], instance: Any, **kwargs: Any) -> None:
    before = getattr(instance, _BEFORE, None)
    if before is None:
        return
    delattr(instance, _BEFORE)
    if before.get("is_active") and not instance.is_active:
        announce([instance.pk], revoked=True)
    elif "password" in before and before["password"] != instance.password:
        announce([instance.pk], revoked=True)  # Django's "log out everywhere" too
    elif any(before[name] != getattr(instance, name) for name in _CHANGING if name in before):
        announce([instance.pk])


def _user_deleted(sender: type[Model], instance: Any, **kwargs: Any) -> None:
    announce([instance.pk], revoked=True)


def _group_deleting(sender: type[Group], instance: Group, **kwargs: Any) -> None:
    setattr(instance, _MEMBERS, _users_of(Group, [instance.pk]))


def _group_deleted(sender: type[Group], instance: Group, **kwargs: Any) -> None:
    announce(getattr(instance, _MEMBERS, ()))


def _users_of(model: type[Any], pks: Iterable[Any]) -> list[Any]:
    """The users that ``pks`` of ``model`` (users, groups or permissions) stand for."""
    pks = list(pks)
    user_model = get_user_model()
    users = user_model._default_manager
    if model is user_model:
        return pks
    if model is Group:
        return list(users.filter(groups__in=pks).values_list("pk", flat=True))
    return list(  # permissions: their users, directly and through groups
        users.filter(user_permissions__in=pks)
        .values_list("pk", flat=True)
        .union(users.filter(groups__permissions__in=pks).values_list("pk", flat=True))
    )


def _relation_changed(
    sender: type[Any],
    instance: Any,
    action: str,
    reverse: bool,
    model: type[Any],
    pk_set: set[Any] | None,
    **kwargs: Any,
) -> None:
    """users ⇄ groups, users ⇄ permissions, groups ⇄ permissions changed.

    ``instance`` is on one side, ``pk_set`` the other side's keys (``None``
    for a ``clear()``, whose keys are read before it, in ``pre_clear``).
    """
    user_model = get_user_model()
    if action == "pre_clear":
        setattr(instance, _MEMBERS, _users_of(type(instance), [instance.pk]))
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if action == "post_clear":
        announce(getattr(instance, _MEMBERS, ()))
        return
    if isinstance(instance, user_model):  # user.groups or user.user_permissions
        announce([instance.pk])
    elif model is user_model:  # group.user_set or permission.user_set
        announce(pk_set or ())
    elif isinstance(instance, Group):  # group.permissions
        announce(_users_of(Group, [instance.pk]))
    else:  # permission.group_set
        announce(_users_of(Group, pk_set or ()))


def connect() -> None:
    """Start announcing access changes. Called once from ``AppConfig.ready()``.

    Whatever the user model (``AUTH_USER_MODEL``): its own relations to
    groups and permissions are followed if it has them (``PermissionsMixin``),
    and the fields of ``AbstractUser`` that it has.
    """
    user_model = get_user_model()
    pre_save.connect(_user_before, sender=user_model, dispatch_uid=f"{__name__}.user_before")
    post_save.connect(_user_saved, sender=user_model, dispatch_uid=f"{__name__}.user_saved")
    post_delete.connect(_user_deleted, sender=user_model, dispatch_uid=f"{__name__}.user_deleted")
    pre_delete.connect(_group_deleting, sender=Group, dispatch_uid=f"{__name__}.group_deleting")
    post_delete.connect(_group_deleted, sender=Group, dispatch_uid=f"{__name__}.group_deleted")
    relations = [
        user_model._meta.get_field(name).remote_field.through  # type: ignore[union-attr]
        for name in usermodel.fields(user_model, ("groups", "user_permissions"))
    ]
    for through in (*relations, Group.permissions.through):
        m2m_changed.connect(
            _relation_changed, sender=through, dispatch_uid=f"{__name__}.{through.__name__}"
        )
