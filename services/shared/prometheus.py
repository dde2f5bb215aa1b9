"""The Prometheus text exposition format, for both services' ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Family(NamedTuple):
    """One metric: its name, ``counter`` or ``gauge``, help text, and samples.

    ``samples`` maps a label set as written (``'{reason="timeout"}'``, or ``""``
    for none) to its value.
    """

    name: str
    kind: str
    help: str
    samples: Mapping[str, float]


def render(families: Iterable[Family]) -> str:
    """Return the exposition text of ``families``."""
    lines = []
    for family in families:
        lines += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.kind}"]
        lines += [f"{family.name}{labels} {value:g}" for labels, value in family.samples.items()]
    return "\n".join(lines) + "\n"
