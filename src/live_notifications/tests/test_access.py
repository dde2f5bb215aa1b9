"""Access changes made through the ORM are announced in the outbox, in their transaction."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import transaction
from django.test import Client

from live_notifications.access import announce
from live_notifications.models import OutboxEvent
from live_notifications.shared.events import CHANGED, REVOKED, AccessChange, decode_entry

pytestmark = pytest.mark.django_db(transaction=True)


class Announcements:
    """The access changes written to the outbox since the fixture started."""

    def __init__(self) -> None:
        self.after = OutboxEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def take(self) -> list[tuple[str, tuple[int, ...]]]:
        rows = OutboxEvent.objects.filter(id__gt=self.after).order_by("id")
        self.after = max([self.after, *(row.id for row in rows)])
        entries = [decode_entry(row.payload) for row in rows]
        return [(e.access, e.users) for e in entries if isinstance(e, AccessChange)]


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="a-Long-passphrase-1")


@pytest.fixture
def editors(alice: User) -> Group:
    group = Group.objects.create(name="Editors")
    group.permissions.add(Permission.objects.get(codename="view_group"))
    alice.groups.add(group)
    return group


@pytest.fixture
def announced(alice: User, editors: Group) -> Announcements:
    return Announcements()


def view_user() -> Permission:
    return Permission.objects.get(codename="view_user")


def test_deactivating_revokes(alice: User, announced: Announcements) -> None:
    alice.is_active = False
    alice.save()
    assert announced.take() == [(REVOKED, (alice.pk,))]


def test_deleting_revokes(alice: User, announced: Announcements) -> None:
    pk = alice.pk
    alice.delete()
    # Deleting also empties its relations; the revocation is what counts.
    assert (REVOKED, (pk,)) in announced.take()


def test_changing_the_password_revokes(alice: User, announced: Announcements) -> None:
    alice.set_password("another-Long-passphrase-2")
    alice.save()
    assert announced.take() == [(REVOKED, (alice.pk,))]


def test_superuser_status_changes_access(alice: User, announced: Announcements) -> None:
    alice.is_superuser = True
    alice.save()
    assert announced.take() == [(CHANGED, (alice.pk,))]


def test_saves_that_change_no_access_announce_nothing(
    alice: User, announced: Announcements, client: Client
) -> None:
    alice.first_name = "Alice"
    alice.save()
    assert client.login(username="alice", password="a-Long-passphrase-1")  # saves last_login
    assert announced.take() == []


@pytest.mark.parametrize("reverse", [False, True], ids=["user side", "permission side"])
def test_own_permissions(alice: User, announced: Announcements, reverse: bool) -> None:
    if reverse:
        view_user().user_set.add(alice)
        view_user().user_set.remove(alice)
    else:
        alice.user_permissions.add(view_user())
        alice.user_permissions.remove(view_user())
    assert announced.take() == [(CHANGED, (alice.pk,))] * 2


@pytest.mark.parametrize("reverse", [False, True], ids=["user side", "group side"])
def test_joining_and_leaving_groups(
    alice: User, editors: Group, announced: Announcements, reverse: bool
) -> None:
    if reverse:
        editors.user_set.remove(alice)
        editors.user_set.add(alice)
    else:
        alice.groups.remove(editors)
        alice.groups.add(editors)
    assert announced.take() == [(CHANGED, (alice.pk,))] * 2


def test_clearing_relations(alice: User, editors: Group, announced: Announcements) -> None:
    alice.user_permissions.add(view_user())
    announced.take()
    alice.user_permissions.clear()
    editors.permissions.clear()
    editors.user_set.clear()
    assert announced.take() == [(CHANGED, (alice.pk,))] * 3


@pytest.mark.parametrize("reverse", [False, True], ids=["group side", "permission side"])
def test_a_groups_permissions(
    alice: User, editors: Group, announced: Announcements, reverse: bool
) -> None:
    bob = User.objects.create_user("bob")
    bob.groups.add(editors)
    announced.take()
    if reverse:
        view_user().group_set.add(editors)
        view_user().group_set.remove(editors)
    else:
        editors.permissions.add(view_user())
        editors.permissions.remove(view_user())
    assert announced.take() == [(CHANGED, tuple(sorted((alice.pk, bob.pk))))] * 2


def test_deleting_a_group(alice: User, editors: Group, announced: Announcements) -> None:
    editors.delete()
    assert (CHANGED, (alice.pk,)) in announced.take()


def test_a_rolled_back_change_announces_nothing(alice: User, announced: Announcements) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        alice.is_active = False
        alice.save()
        raise RuntimeError("the view failed")
    assert announced.take() == []


def test_the_admins_forms_announce_too(
    admin_client: Client, alice: User, editors: Group, announced: Announcements
) -> None:
    response = admin_client.post(
        f"/admin/auth/group/{editors.pk}/change/", {"name": "Editors", "permissions": []}
    )
    assert response.status_code == 302
    assert (CHANGED, (alice.pk,)) in announced.take()


def test_announce_by_hand(alice: User, announced: Announcements) -> None:
    User.objects.filter(pk=alice.pk).update(is_active=False)  # not seen by signals
    assert announced.take() == []
    announce([alice.pk], revoked=True)
    assert announced.take() == [(REVOKED, (alice.pk,))]
