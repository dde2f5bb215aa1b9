"""Tell users what an administrator changed of their access, as it commits.

- ``access.changed``, to a user whose groups or own permissions changed;
- ``group.changed``, to the members of a group whose permissions changed;
- ``group.renamed``, to the members of a renamed group.

Each event's ``data`` has a ``message`` for people, which the live page shows.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed, post_save, pre_save

from live_notifications.events import publish

_OLD_NAME = "_notices_old_name"


def _relation_changed(
    sender: type[Any],
    instance: Any,
    action: str,
    reverse: bool,
    pk_set: set[Any] | None,
    **kwargs: Any,
) -> None:
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    user_model = get_user_model()
    what = "groups" if sender is user_model.groups.through else "permissions"
    message = f"An administrator changed your {what}."
    if isinstance(instance, user_model):  # user.groups, user.user_permissions
        publish("access.changed", {"message": message}, users=[instance])
    elif isinstance(instance, Group) and sender is user_model.groups.through:  # group.user_set
        if pk_set:
            publish("access.changed", {"message": message}, users=pk_set)
    elif isinstance(instance, Group):  # group.permissions
        message = f"An administrator changed the permissions of your group “{instance.name}”."
        publish("group.changed", {"message": message, "group": instance.name}, groups=[instance])


def _group_saving(sender: type[Group], instance: Group, **kwargs: Any) -> None:
    if instance.pk is not None and not kwargs.get("raw"):
        old = Group.objects.filter(pk=instance.pk).values_list("name", flat=True).first()
        setattr(instance, _OLD_NAME, old)


def _group_saved(sender: type[Group], instance: Group, **kwargs: Any) -> None:
    old = getattr(instance, _OLD_NAME, None)
    if old is not None and old != instance.name:
        delattr(instance, _OLD_NAME)
        message = f"Your group “{old}” is now called “{instance.name}”."
        data = {"message": message, "old": old, "new": instance.name}
        publish("group.renamed", data, groups=[instance])


def _signals() -> list[tuple[Any, Any, type[Any], str]]:
    user_model = get_user_model()
    found: list[tuple[Any, Any, type[Any], str]] = [
        (m2m_changed, _relation_changed, through, f"{__name__}.{through.__name__}")
        for through in (
            user_model.groups.through,
            user_model.user_permissions.through,
            Group.permissions.through,
        )
    ]
    found.append((pre_save, _group_saving, Group, f"{__name__}.group_saving"))
    found.append((post_save, _group_saved, Group, f"{__name__}.group_saved"))
    return found


def connect() -> None:
    """Start publishing. The app does it when ready; tests, around themselves."""
    for signal, receiver, sender, uid in _signals():
        signal.connect(receiver, sender=sender, dispatch_uid=uid)


def disconnect() -> None:
    for signal, _receiver, sender, uid in _signals():
        signal.disconnect(sender=sender, dispatch_uid=uid)
