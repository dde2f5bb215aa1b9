from __future__ import annotations

import pytest

from live_notifications.shared import environment
from live_notifications.shared.environment import ConfigurationError


def test_required_string() -> None:
    with pytest.raises(ConfigurationError, match="SECRET must be set"):
        environment.string("SECRET", env={})
    with pytest.raises(ConfigurationError, match="SECRET must be set"):
        environment.string("SECRET", env={"SECRET": ""})
    assert environment.string("SECRET", env={"SECRET": "s"}) == "s"


def test_integer() -> None:
    assert environment.integer("N", 3, env={}) == 3
    assert environment.integer("N", 3, env={"N": "7"}) == 7
    with pytest.raises(ConfigurationError, match="N must be an integer, got 'x'"):
        environment.integer("N", 3, env={"N": "x"})
    with pytest.raises(ConfigurationError, match="at least 1"):
        environment.integer("N", 3, minimum=1, env={"N": "0"})


def test_number() -> None:
    assert environment.number("T", 1.5, env={"T": "0.25"}) == 0.25
    with pytest.raises(ConfigurationError, match="T must be a number"):
        environment.number("T", 1.5, env={"T": "soon"})


@pytest.mark.parametrize(
    ("raw", "value"), [("yes", True), ("0", False), ("OFF", False), ("true", True)]
)
def test_boolean(raw: str, value: bool) -> None:
    assert environment.boolean("B", not value, env={"B": raw}) is value


def test_bad_boolean() -> None:
    with pytest.raises(ConfigurationError, match="B must be true or false"):
        environment.boolean("B", True, env={"B": "maybe"})


def test_string_list() -> None:
    assert environment.string_list("L", "a, b,,c ", env={}) == ["a", "b", "c"]
