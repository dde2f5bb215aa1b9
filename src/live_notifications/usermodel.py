"""What the package reads of the project's user model: from its metadata, never assumed.

A custom user model may lack ``is_superuser``, ``groups`` or
``user_permissions`` (without ``PermissionsMixin``), and names its own
tables and columns: the outbox's announcements (:mod:`.access`) and the
broadcasters' access query (:mod:`.broadcaster.auth`) ask here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db.models import ManyToManyField, Model


def fields(model: type[Model], names: Iterable[str]) -> tuple[str, ...]:
    """Those of ``names`` that are fields of ``model``, in order."""
    present = []
    for name in names:
        try:
            model._meta.get_field(name)
        except FieldDoesNotExist:
            continue
        present.append(name)
    return tuple(present)


def many_to_many(model: type[Model], name: str) -> ManyToManyField[Any, Any]:
    """``model``'s many-to-many field ``name``; :exc:`TypeError` if it is another kind."""
    field = model._meta.get_field(name)
    if not isinstance(field, ManyToManyField):
        raise TypeError(f"{model._meta.label}.{name} is not a many-to-many relation")
    return field
