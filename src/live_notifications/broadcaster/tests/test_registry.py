from __future__ import annotations

from live_notifications.broadcaster.registry import Registry


def test_recipients_by_content_type() -> None:
    registry: Registry[str] = Registry()
    registry.add("groups", frozenset({1}))
    registry.add("groups and users", frozenset({1, 2}))
    registry.add("superuser", None)
    assert set(registry.recipients(1)) == {"groups", "groups and users", "superuser"}
    assert set(registry.recipients(2)) == {"groups and users", "superuser"}
    assert set(registry.recipients(99)) == {"superuser"}
    assert len(registry) == 3


def test_remove_cleans_every_index() -> None:
    registry: Registry[str] = Registry()
    registry.add("a", frozenset({1, 2}))
    registry.add("root", None)
    registry.remove("a")
    registry.remove("root")
    registry.remove("never added")
    assert list(registry.recipients(1)) == []
    assert len(registry) == 0
    assert registry._by_content_type == {}


def test_add_again_replaces_the_content_types() -> None:
    registry: Registry[str] = Registry()
    registry.add("a", frozenset({1}))
    registry.add("a", frozenset({2}))
    assert list(registry.recipients(1)) == []
    assert list(registry.recipients(2)) == ["a"]


def test_iterating_allows_removal() -> None:
    registry: Registry[str] = Registry()
    for name in "abc":
        registry.add(name, frozenset({1}))
    for name in registry:
        registry.remove(name)
    assert len(registry) == 0


def test_membership_is_a_lookup() -> None:
    registry: Registry[str] = Registry()
    registry.add("a", None)
    registry.add("b", frozenset({1}))
    assert "a" in registry and "b" in registry
    registry.remove("b")
    assert "b" not in registry
