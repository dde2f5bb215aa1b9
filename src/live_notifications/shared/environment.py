"""Read configuration from environment variables, failing fast and clearly.

Both services read their settings through these helpers, so a bad value is
reported the same way everywhere: which variable, what was wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TypeVar

N = TypeVar("N", int, float)


class ConfigurationError(RuntimeError):
    """An environment variable is missing or has an invalid value."""


def string(name: str, default: str | None = None, *, env: Mapping[str, str] | None = None) -> str:
    """Return the variable ``name``, or ``default``.

    Without a default the variable is required: a missing or empty value
    raises :exc:`ConfigurationError`.
    """
    value = (os.environ if env is None else env).get(name, "")
    if value:
        return value
    if default is None:
        raise ConfigurationError(f"{name} must be set")
    return default


def integer(
    name: str, default: int, *, minimum: int = 0, env: Mapping[str, str] | None = None
) -> int:
    """Return the variable ``name`` as an integer of at least ``minimum``."""
    return _at_least(name, default, minimum, int, "an integer", env)


def number(
    name: str, default: float, *, minimum: float = 0.0, env: Mapping[str, str] | None = None
) -> float:
    """Return the variable ``name`` as a float of at least ``minimum``."""
    return _at_least(name, default, minimum, float, "a number", env)


def _at_least(
    name: str,
    default: N,
    minimum: N,
    parse: Callable[[str], N],
    kind: str,
    env: Mapping[str, str] | None,
) -> N:
    raw = string(name, str(default), env=env)
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be {kind}, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {value}")
    return value


def boolean(name: str, default: bool, *, env: Mapping[str, str] | None = None) -> bool:
    """Return the variable ``name`` as a boolean: true/false, yes/no, on/off, 1/0."""
    raw = string(name, "true" if default else "false", env=env).strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def string_list(name: str, default: str, *, env: Mapping[str, str] | None = None) -> list[str]:
    """Return the variable ``name`` as a comma-separated list, blanks dropped."""
    return [item.strip() for item in string(name, default, env=env).split(",") if item.strip()]
