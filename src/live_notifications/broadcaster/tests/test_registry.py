from __future__ import annotations

import random
from collections import Counter

from live_notifications.broadcaster.auth import Access, access
from live_notifications.broadcaster.registry import Registry
from live_notifications.shared.events import Audience

GROUPS = access(content_types=[1], permissions=["auth.view_group"], groups=[10])
GROUPS_AND_USERS = access(content_types=[1, 2], permissions=["auth.view_user"], groups=[10, 20])
NOTHING = access()
#: A superuser in no group.
SUPERUSER = access(superuser=True)


def registry_of(*connections: tuple[str, int, Access]) -> Registry[str]:
    registry: Registry[str] = Registry()
    for name, user, granted in connections:
        registry.add(name, user, granted)
    return registry


def test_recipients_by_content_type() -> None:
    registry = registry_of(("a", 1, GROUPS), ("b", 2, GROUPS_AND_USERS), ("root", 3, SUPERUSER))
    assert Counter(registry.recipients(Audience(content_types=frozenset({1})))) == Counter(
        ["a", "b", "root"]
    )
    assert set(registry.recipients(Audience(content_types=frozenset({2})))) == {"b", "root"}
    assert set(registry.recipients(Audience(content_types=frozenset({99})))) == {"root"}
    assert len(registry) == 3


def test_users_and_groups_are_not_a_superusers_audience() -> None:
    registry = registry_of(("a", 1, GROUPS), ("b", 2, GROUPS_AND_USERS), ("root", 3, SUPERUSER))
    assert list(registry.recipients(Audience(users=frozenset({1})))) == ["a"]
    assert set(registry.recipients(Audience(groups=frozenset({20})))) == {"b"}
    assert set(registry.recipients(Audience(permissions=frozenset({"auth.view_user"})))) == {
        "b",
        "root",
    }
    assert set(registry.recipients(Audience(everyone=True))) == {"a", "b", "root"}


def test_a_user_in_a_matching_group_is_counted_once() -> None:
    registry = registry_of(("a", 1, GROUPS), ("a2", 1, GROUPS), ("b", 2, GROUPS))
    audience = Audience(users=frozenset({1}), groups=frozenset({10}))
    assert Counter(registry.recipients(audience)) == Counter(["a", "a2", "b"])


def test_remove_cleans_every_index() -> None:
    registry = registry_of(("a", 1, GROUPS_AND_USERS), ("root", 3, SUPERUSER))
    registry.remove("a")
    registry.remove("root")
    registry.remove("never added")
    assert list(registry.recipients(Audience(content_types=frozenset({1})))) == []
    assert len(registry) == 0
    assert registry._by_content_type == registry._by_permission == registry._by_group == {}
    assert registry._by_access == registry._by_user == {}
    assert registry._superusers == set()


def test_add_again_replaces_the_access() -> None:
    registry = registry_of(("a", 1, GROUPS))
    registry.add("a", 1, access(content_types=[2]))
    assert list(registry.recipients(Audience(content_types=frozenset({1})))) == []
    assert list(registry.recipients(Audience(content_types=frozenset({2})))) == ["a"]
    assert list(registry.recipients(Audience(users=frozenset({1})))) == ["a"]


def test_iterating_allows_removal() -> None:
    registry = registry_of(*((name, 1, GROUPS) for name in "abc"))
    for name in registry:
        registry.remove(name)
    assert len(registry) == 0


def test_a_connection_costs_the_same_whatever_its_access() -> None:
    # Thousands of connections with one access: one entry per index.
    many = access(content_types=range(50), permissions=[f"a.p{i}" for i in range(50)])
    registry = registry_of(*((f"c{i}", i, many) for i in range(1000)))
    assert len(registry._by_access) == 1
    assert all(len(accesses) == 1 for accesses in registry._by_permission.values())


def random_access(rng: random.Random) -> Access:
    if rng.random() < 0.1:
        return access(superuser=True, groups=rng.sample(range(4), rng.randint(0, 2)))
    return access(
        content_types=rng.sample(range(4), rng.randint(0, 2)),
        permissions=[f"app.p{i}" for i in rng.sample(range(4), rng.randint(0, 2))],
        groups=rng.sample(range(4), rng.randint(0, 2)),
    )


def random_audience(rng: random.Random) -> Audience:
    return Audience(
        users=frozenset(rng.sample(range(30), rng.choice([0, 0, 1, 3]))),
        groups=frozenset(rng.sample(range(4), rng.choice([0, 0, 1, 2]))),
        permissions=frozenset(f"app.p{i}" for i in rng.sample(range(4), rng.choice([0, 0, 1]))),
        content_types=frozenset(rng.sample(range(4), rng.choice([0, 0, 1, 2]))),
        everyone=rng.random() < 0.05,
    )


def test_recipients_and_runs_agree_with_the_rule_of_each_connection() -> None:
    """The indexes find exactly whom :meth:`Access.receives` accepts, each once."""
    rng = random.Random(23)
    for _ in range(200):
        registry: Registry[str] = Registry()
        users: dict[str, tuple[int, Access]] = {}
        for i in range(rng.randint(0, 40)):
            user, granted = rng.randrange(30), random_access(rng)
            users[f"c{i}"] = (user, granted)
            registry.add(f"c{i}", user, granted)
        for name in rng.sample(sorted(users), len(users) // 4):  # some leave
            registry.remove(name)
            del users[name]
        run = [random_audience(rng) for _ in range(rng.randint(1, 6))]
        expected = {
            name: tuple(i for i, audience in enumerate(run) if granted.receives(user, audience))
            for name, (user, granted) in users.items()
        }
        for i, audience in enumerate(run):
            found = Counter(registry.recipients(audience))
            assert found == Counter(name for name, due in expected.items() if i in due)
        received: dict[str, tuple[int, ...]] = {}
        for indexes, groups in registry.due(run).items():
            for connections in groups:
                for name in connections:
                    assert name not in received, "a connection written twice"
                    received[name] = indexes
        assert received == {name: due for name, due in expected.items() if due}
