"""Small inline SVG line charts for run reports: no JavaScript, nothing fetched."""

import html
import math
from collections.abc import Mapping, Sequence

__all__ = ["line_chart"]

WIDTH, HEIGHT = 520, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 130, 30, 40
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")

Series = Sequence[tuple[int, float]]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def line_chart(
    title: str,
    series: Mapping[str, Series],
    y_label: str,
    limits: Mapping[str, float] | None = None,
) -> str:
    """An SVG chart of ``series`` (name -> [(round, value)]) with dashed ``limits`` lines."""
    points = [
        (r, v)
        for values in series.values()
        for r, v in values
        if v is not None and math.isfinite(v)
    ]
    limits = dict(limits or {})
    if not points:
        return f"<figure><figcaption>{html.escape(title)}</figcaption><p>no data yet</p></figure>"
    rounds = [r for r, _ in points]
    levels = [v for _, v in points] + list(limits.values())
    x_low, x_high = min(rounds), max(max(rounds), min(rounds) + 1)
    y_low, y_high = min(0.0, min(levels)), max(levels) * 1.05 or 1.0

    def x(r: float) -> float:
        return LEFT + (r - x_low) / (x_high - x_low) * (WIDTH - LEFT - RIGHT)

    def y(v: float) -> float:
        return HEIGHT - BOTTOM - (v - y_low) / (y_high - y_low) * (HEIGHT - TOP - BOTTOM)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{LEFT}" y="18" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" '
        'stroke="#444"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#444"/>',
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" '
        'text-anchor="middle">round</text>',
        f'<text x="12" y="{TOP + (HEIGHT - TOP - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {TOP + (HEIGHT - TOP - BOTTOM) / 2})">'
        f"{html.escape(y_label)}</text>",
    ]
    for tick in _ticks(y_low, y_high):
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11">'
            f"{tick:.2f}</text>"
        )
    for r in sorted(set(rounds)):
        parts.append(
            f'<text x="{x(r):.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" '
            f'font-size="11">{r}</text>'
        )
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        clean = sorted((r, v) for r, v in values if math.isfinite(v))
        if not clean:
            continue
        path = " ".join(f"{x(r):.1f},{y(v):.1f}" for r, v in clean)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        parts += [
            f'<circle cx="{x(r):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>' for r, v in clean
        ]
        legend_y = TOP + 16 * index
        parts.append(
            f'<text x="{WIDTH - RIGHT + 8}" y="{legend_y + 4}" fill="{colour}" font-size="12">'
            f"{html.escape(name)}</text>"
        )
    for index, (name, value) in enumerate(limits.items()):
        parts.append(
            f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{WIDTH - RIGHT}" y2="{y(value):.1f}" '
            f'stroke="#888" stroke-dasharray="5,4"/>'
            f'<text x="{WIDTH - RIGHT + 8}" y="{y(value) + 4 + 12 * index:.1f}" font-size="11" '
            f'fill="#666">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return f"<figure>{''.join(parts)}</figure>"
