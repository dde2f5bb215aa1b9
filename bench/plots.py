"""The two plots of docs/performance.md, drawn as SVG from the results' JSON lines.

``python -m bench.plots`` redraws them from ``bench/results/*.jsonl``;
``make bench`` does it after its runs. For each server and connection count
the latest record is drawn, among those measured with the newest record's
machine and load (rate, share): figures from different machines or loads
never share a line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from . import report
from .report import Record

LABELS = {
    "broadcaster": "this project's broadcaster",
    "broadcaster-mixed": "this project's broadcaster, mixed audiences",
    "baseline": "the how-to's design",
    "baseline-plain": "the how-to's design, compression off",
}
COLOURS = {
    "broadcaster": "#1b6ac9",
    "broadcaster-mixed": "#5e35b1",
    "baseline": "#c62828",
    "baseline-plain": "#ef8a17",
}
WIDTH, HEIGHT = 680, 430
LEFT, RIGHT, TOP, BOTTOM = 78, 24, 64, 96
#: A server busier than this share of its CPU in the saturated phase was the
#: bottleneck; a less busy one was fed too slowly to show its capacity.
SATURATED = 0.8


def select(records: Sequence[Record]) -> list[Record]:
    """The latest fan-out record per (server, connections) comparable with the newest one."""
    # The site's token records (bench.tokens) share the files, not the plots.
    records = [r for r in records if r.get("kind", "fanout") == "fanout"]
    if not records:
        return []
    newest = max(records, key=lambda r: r["time"])

    def comparable(record: Record) -> bool:
        return all(
            record.get("machine", {}).get(key) == newest.get("machine", {}).get(key)
            for key in ("cores", "cpu_model")
        ) and all(
            record.get("settings", {}).get(key) == newest.get("settings", {}).get(key)
            for key in ("rate", "share")
        )

    latest: dict[tuple[str, int], Record] = {}
    for record in sorted(filter(comparable, records), key=lambda r: r["time"]):
        latest[(record["server"], record["connections"])] = record
    return sorted(latest.values(), key=lambda r: (r["server"], r["connections"]))


def write(results: Path, directory: Path) -> list[Path]:
    """Draw the plots from ``results/*.jsonl`` into ``directory``; return their paths."""
    records = select(report.load(sorted(results.glob("*.jsonl"))))
    if not records:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    newest = max(records, key=lambda r: r["time"])
    machine, setting = newest["machine"], newest["settings"]
    dates = sorted({r["time"][:10] for r in records})
    footnote = [
        f"One run per point, {' to '.join(dates[:1] + dates[1:][-1:])}, "
        f"{machine['cores']} cores ({machine['cpu_model']}): the server on one, the load",
        "generator, PostgreSQL, Redis and the relay on the other (docs/performance.md).",
    ]
    share = f"{setting['share']:.0%}"
    latency = chart(
        records,
        lambda r: None if r.get("paced") is None else r["paced"]["latency"]["p99"],
        title=f"Latency p99, commit to receipt, {setting['rate']:g} events/s to {share} of clients",
        axis="p99 latency (ms, log scale)",
        scale=1000,
        log_y=True,
        footnote=footnote,
    )
    throughput = chart(
        records,
        lambda r: None if r.get("saturated") is None else r["saturated"]["deliveries_per_second"],
        title=f"Deliveries per second, events as fast as possible, to {share} of clients",
        axis="deliveries per second",
        scale=1,
        log_y=False,
        footnote=footnote,
        hollow=lambda r: (r["saturated"].get("server_busy") or 0) < SATURATED,
        hollow_label=(
            f"Hollow: the server was under {SATURATED:.0%} busy, fed too slowly to show its limit."
        ),
    )
    written = []
    for name, svg in (
        ("performance-latency.svg", latency),
        ("performance-throughput.svg", throughput),
    ):
        path = directory / name
        path.write_text(svg)
        written.append(path)
    return written


def chart(
    records: Sequence[Record],
    value: Callable[[Record], float | None],
    *,
    title: str,
    axis: str,
    scale: float,
    log_y: bool,
    footnote: Sequence[str],
    hollow: Callable[[Record], bool] | None = None,
    hollow_label: str = "",
) -> str:
    """A line per server: ``value`` (times ``scale``) against connections, log x.

    Points for which ``hollow`` is true are drawn hollow, explained by ``hollow_label``.
    """
    series: dict[str, list[tuple[int, float, bool]]] = {}
    for record in records:
        y = value(record)
        if y is not None and y > 0:
            empty = hollow is not None and hollow(record)
            series.setdefault(record["server"], []).append(
                (record["connections"], y * scale, empty)
            )
    xs = sorted({x for points in series.values() for x, _, _ in points}) or [1]
    ys = [y for points in series.values() for _, y, _ in points] or [1.0]
    x_low, x_high = math.log10(xs[0]) - 0.15, math.log10(xs[-1]) + 0.15
    if log_y:
        y_low = math.floor(math.log10(min(ys)))
        y_high = math.ceil(math.log10(max(ys)) + 0.05)
        y_ticks = [10.0**k for k in range(y_low, y_high + 1)]
        y_low_value, y_high_value = math.log10(y_ticks[0]), math.log10(y_ticks[-1])
    else:
        step = _nice_step(max(ys) / 5)
        y_ticks = [step * k for k in range(0, math.ceil(max(ys) * 1.08 / step) + 1)]
        y_low_value, y_high_value = 0.0, y_ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (math.log10(x) - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        v = math.log10(y) if log_y else y
        return TOP + plot_h - (v - y_low_value) / (y_high_value - y_low_value or 1) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="24" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    for tick in y_ticks:
        y = py(tick)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e3e3e3"/>'
        )
        parts.append(
            f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{_label(tick)}</text>'
        )
    for x in xs:
        parts.append(
            f'<line x1="{px(x):.1f}" y1="{TOP}" x2="{px(x):.1f}" y2="{TOP + plot_h}" '
            'stroke="#e3e3e3"/>'
        )
        parts.append(
            f'<text x="{px(x):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{x:,}</text>'
        )
    parts += [
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="none" stroke="#444"/>',
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h + 38}" text-anchor="middle">'
        "connections (log scale)</text>",
        f'<text transform="translate(18 {TOP + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(axis)}</text>',
    ]
    notes = [*([hollow_label] if any(e for p in series.values() for *_, e in p) else []), *footnote]
    for line, note in enumerate(reversed(notes)):
        parts.append(
            f'<text x="{LEFT}" y="{HEIGHT - 10 - 14 * line}" font-size="10.5" fill="#555">'
            f"{escape(note)}</text>"
        )
    for row, (server, points) in enumerate(sorted(series.items(), key=lambda s: _order(s[0]))):
        colour = COLOURS.get(server, "#333")
        coordinates = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in sorted(points))
        parts.append(
            f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="2.5"/>'
        )
        for x, y, empty in points:
            fill = "white" if empty else colour
            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4.5" fill="{fill}" '
                f'stroke="{colour}" stroke-width="2">'
                f"<title>{escape(LABELS.get(server, server))}, {x:,} connections: "
                f"{_label(y)}</title></circle>"
            )
            parts.append(
                f'<text x="{px(x) + 8:.1f}" y="{py(y) - 8:.1f}" fill="{colour}">{_label(y)}</text>'
            )
        legend_y = TOP - 22
        legend_x = LEFT + row * 230
        parts.append(
            f'<line x1="{legend_x}" y1="{legend_y + 4}" x2="{legend_x + 22}" y2="{legend_y + 4}" '
            f'stroke="{colour}" stroke-width="2.5"/>'
        )
        parts.append(
            f'<text x="{legend_x + 28}" y="{legend_y + 8}">'
            f"{escape(LABELS.get(server, server))}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _order(server: str) -> int:
    return list(LABELS).index(server) if server in LABELS else len(LABELS)


def _nice_step(raw: float) -> float:
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _label(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 10_000:
        return f"{value / 1000:,.0f}k"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.0f}"
    return f"{value:.2g}"


def main() -> None:
    from .config import Config

    config = Config.from_env()
    for path in write(config.results_dir, config.plots_dir):
        print(path)


if __name__ == "__main__":
    main()
