"""The Prometheus text exposition format, for both services' ``/metrics``."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Family(NamedTuple):
    """One metric: its name, ``counter``, ``gauge`` or ``histogram``, help text, and samples.

    ``samples`` maps what follows the name as written, a label set
    (``'{reason="timeout"}'``, or ``""`` for none) or for a histogram a
    suffix and labels (``'_bucket{le="0.1"}'``, ``"_sum"``), to its value.
    """

    name: str
    kind: str
    help: str
    samples: Mapping[str, float]


class Histogram:
    """Counts of observations by upper bound, as Prometheus's histograms keep them."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(sorted(bounds))
        #: Observations in each bucket (not cumulative), the last one above every bound.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def samples(self) -> dict[str, float]:
        """The ``_bucket`` (cumulative, ``le`` each bound then ``+Inf``), ``_sum``, ``_count``."""
        samples: dict[str, float] = {}
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            le = "+Inf" if bound == math.inf else f"{bound:g}"
            samples[f'_bucket{{le="{le}"}}'] = total
        samples["_sum"] = self.sum
        samples["_count"] = total
        return samples


def render(families: Iterable[Family]) -> str:
    """Return the exposition text of ``families``."""
    lines = []
    for family in families:
        lines += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.kind}"]
        lines += [f"{family.name}{labels} {value:g}" for labels, value in family.samples.items()]
    return "\n".join(lines) + "\n"
