"""App events reach their audience and nobody else, while a broadcaster restarts.

The demo publishes its own events (services/web/notices): ``group.renamed``
to the members of a renamed group (a group audience), ``access.changed`` to
a user whose permissions changed (a user audience). The administrator makes
both kinds through the admin, over HTTP, in a thread, while resuming
clients of four people listen through the edge and on the direct port, and
a broadcaster restarts. Everyone may view groups, so the admin's own event
for the last rename, published after everything else, is the sentinel:
a client that has it has everything it will ever get. Then each client is
counted: the app events of its audience exactly (none lost, none repeated,
in order), and none of the others.
"""

from __future__ import annotations

import collections
import secrets
from typing import Any

from .conftest import PersonFactory
from .helpers import VIEW_GROUP, AdminSession, Person
from .resuming import AdminFlow, ResumingClient, ResumingClients
from .stack import Stack

VIEW_USER = "Authentication and Authorization | user | Can view user"
#: Rounds (a rename and a permission change each) before the restart, and after.
BEFORE = 4
AFTER = 4


class AudienceFlow(AdminFlow):
    """Each round, the administrator renames the group ``group_pk`` (its members
    are told) and changes ``target``'s permissions (it is told): :attr:`made`
    lists the group's names."""

    def __init__(self, admin: AdminSession, group_pk: str, prefix: str, target: Person) -> None:
        super().__init__(admin, prefix, limit=60)
        self.group_pk = group_pk
        self.target = target

    def round(self, number: int) -> str:
        name = f"{self.prefix}-{number:03d}"
        self.admin.change("auth/group", self.group_pk, {"name": name})
        # Viewing users, or not: viewing groups, always.
        self.admin.grant(
            self.target.pk, *((VIEW_GROUP, VIEW_USER) if number % 2 else (VIEW_GROUP,))
        )
        return name


def app_events(client: ResumingClient, name: str) -> list[dict[str, Any]]:
    return [event for event in client.events() if event.get("event") == name]


def test_user_and_group_audiences_through_a_restart(
    stack: Stack,
    admin: AdminSession,
    make_person: PersonFactory,
    resuming: ResumingClients,
    suffix: str,
) -> None:
    prefix = f"audience-{suffix}-{secrets.token_hex(2)}"
    group_name = f"{prefix}-000"
    group_pk = admin.add_group(group_name)
    members = [make_person("member", VIEW_GROUP), make_person("member", VIEW_GROUP)]
    target, outsider = make_person("target", VIEW_GROUP), make_person("outsider", VIEW_GROUP)
    for member in members:
        admin.set_groups(member.pk, group_name)
    people = [*members, target, outsider]
    try:
        clients = {
            person.username: [
                resuming.open(person, url) for url in (stack.ws_site_url, stack.ws_direct_url)
            ]
            for person in people
        }
        counts = stack.wait_for_connections(len(resuming.clients))
        resuming.wait_welcomed()
        with AudienceFlow(admin, group_pk, prefix, target) as flow:
            flow.wait_made(BEFORE)
            victim = max(counts, key=counts.__getitem__)
            stack.restart(victim)
            flow.wait_made(len(flow.made) + AFTER)
        sentinel = f"{prefix}-end"
        admin.change("auth/group", group_pk, {"name": sentinel})
        resuming.wait_for_object(sentinel)
        renamed, changed = [*flow.made, sentinel], len(flow.made)

        print(
            f"{len(renamed)} renames, {changed} permission changes; "
            f"restarted {victim[:12]} holding {counts[victim]} of {sum(counts.values())} clients"
        )
        ids_by_event: dict[str, str] = {}
        for person in people:
            for client in clients[person.username]:
                client.check()
                print(f"  {person.username}: {client.summary()}")
                events = client.events()
                seen = collections.Counter(event["id"] for event in events)
                repeated = [event_id for event_id, times in seen.items() if times > 1]
                assert not repeated, f"{client.name} received ids twice: {repeated}"
                got_renames = [e["data"]["new"] for e in app_events(client, "group.renamed")]
                got_changes = app_events(client, "access.changed")
                if person in members:
                    assert got_renames == renamed, f"{person.username} on {client.url}"
                else:
                    assert got_renames == [], f"{person.username} on {client.url}"
                if person is target:
                    assert len(got_changes) == changed, f"{client.url}: {got_changes}"
                else:
                    assert got_changes == [], f"{person.username} on {client.url}"
                for event in app_events(client, "group.renamed") + got_changes:
                    key = f"{event['event']} {event['data']}"
                    assert ids_by_event.setdefault(event["id"], key) == key
        moved = [c for person_clients in clients.values() for c in person_clients if c.reconnects]
        assert moved, "the restart moved no client"
    finally:
        resuming.stop()
        stack.restore()
