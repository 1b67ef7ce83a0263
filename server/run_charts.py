"""Small inline SVG line charts for run reports: no JavaScript, nothing fetched."""

import html
import math
from collections.abc import Mapping, Sequence

__all__ = ["line_chart"]

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 250, 30, 40
#: Legend rows are this many pixels apart (font size 11 plus spacing).
LEGEND_PITCH = 15
#: Limits (budgets) drawn in grey, dashed.
LIMIT_COLOUR = "#666"
#: A limit more than this many times the data's highest value is named, not drawn to scale.
FAR_ABOVE = 3.0
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")

Series = Sequence[tuple[int, float]]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def _legend(rows: list[tuple[str, str, bool]]) -> list[str]:
    """One legend row per entry, right of the plot at a fixed pitch: rows never overlap."""
    parts = []
    for index, (text, colour, dashed) in enumerate(rows):
        row_y = TOP + LEGEND_PITCH * index
        dash = ' stroke-dasharray="4,3"' if dashed else ""
        parts.append(
            f'<line x1="{WIDTH - RIGHT + 6}" y1="{row_y}" x2="{WIDTH - RIGHT + 20}" y2="{row_y}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{WIDTH - RIGHT + 24}" y="{row_y + 4}" fill="{colour}" font-size="11">'
            f"{html.escape(text)}</text>"
        )
    return parts


def line_chart(
    title: str,
    series: Mapping[str, Series],
    y_label: str,
    limits: Mapping[str, float] | None = None,
) -> str:
    """An SVG chart of ``series`` (name -> [(round, value)]) with dashed ``limits`` lines.

    "" when no series has a finite value: the page leaves the chart out. Every series and
    limit has its own legend row; a limit far above the data is listed "(above the scale)"
    instead of squeezing the data against the axis.
    """
    points = [
        (r, v)
        for values in series.values()
        for r, v in values
        if v is not None and math.isfinite(v)
    ]
    limits = dict(limits or {})
    if not points:
        return ""
    rounds = [r for r, _ in points]
    data_high = max(v for _, v in points)
    # a limit far above the data (a budget of 1050 for 0.99 spent) would flatten the data
    # into the axis: it is named above the plot instead of stretching the scale
    shown_limits = {n: v for n, v in limits.items() if v <= FAR_ABOVE * max(data_high, 1e-9)}
    above = {n: v for n, v in limits.items() if n not in shown_limits}
    levels = [v for _, v in points] + list(shown_limits.values())
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
    legend: list[tuple[str, str, bool]] = []  # text, colour, dashed: one row each
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
        legend.append((name, colour, False))
    for name, value in shown_limits.items():
        parts.append(
            f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{WIDTH - RIGHT}" y2="{y(value):.1f}" '
            f'stroke="{LIMIT_COLOUR}" stroke-dasharray="5,4"/>'
        )
        legend.append((f"{name} {value:g}", LIMIT_COLOUR, True))
    legend += [
        (f"{name} {value:g} (above the scale)", LIMIT_COLOUR, True) for name, value in above.items()
    ]
    parts += _legend(legend)
    parts.append("</svg>")
    return f"<figure>{''.join(parts)}</figure>"
