"""Charts as PNG bytes, sized and lettered for a phone (about 1000x700 px, large type).

matplotlib is imported here only, with the Agg backend (no display), so nothing on the webhook's cold path
pays for it until a chart is actually drawn. ``draw_flows`` and ``draw_bars`` return a ``Chart``: the PNG and
what its axes show, read back from the drawn figure, so a test checks the plotted values and the axis label
(dollars, or the token units a chart falls back to; ``depu.analytics.views.AmountAxis``) and never pixels.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

WIDTH_IN, HEIGHT_IN, DPI = 10, 7, 100
COLOURS = ("#2a9d8f", "#e76f51", "#264653", "#e9c46a")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 18, "axes.titlesize": 24, "axes.labelsize": 18, "xtick.labelsize": 15,
                         "ytick.labelsize": 15, "legend.fontsize": 16, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


@dataclass(frozen=True)
class Chart:
    """A drawn chart: its PNG, title, the label of the axis that carries the amounts, and the bars as drawn
    (heights, or lengths for horizontal bars; outflows negative), in drawing order."""

    png: bytes
    title: str
    value_label: str
    values: tuple[float, ...]


def _drawn(fig, ax, title: str, value_label: str, *, horizontal: bool = False) -> Chart:
    """Read the bars back from the figure's own artists, then render it."""
    values = tuple(float(bar.get_width() if horizontal else bar.get_height()) for bar in ax.patches)
    return Chart(_png(fig), title, value_label, values)


def _plain(text: str) -> str:
    """Text drawn as it is: a token's symbol comes from its (anyone's) contract, and matplotlib would read
    text between two ``$`` as mathematics, and fail the whole chart on a bad formula (``$^$``)."""
    return text.replace("$", r"\$")


def _labels(hours: Sequence[int]) -> list[str]:
    return [datetime.fromtimestamp(h, timezone.utc).strftime("%d %H:00") for h in hours]


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=22)
    ax.set_xticks([])
    ax.set_yticks([])


def flows_chart(title: str, hours: Sequence[int], inflow: Sequence[float], outflow: Sequence[float], unit: str) -> bytes:
    return draw_flows(title, hours, inflow, outflow, unit).png


def draw_flows(title: str, hours: Sequence[int], inflow: Sequence[float], outflow: Sequence[float],
               unit: str) -> Chart:
    """In (up) and out (down) per hour; hours without transfers are drawn as empty, not skipped."""
    if hours:
        by_hour = {h: (i, o) for h, i, o in zip(hours, inflow, outflow)}
        hours = list(range(min(hours), max(hours) + 3600, 3600))
        inflow = [by_hour.get(h, (0.0, 0.0))[0] for h in hours]
        outflow = [by_hour.get(h, (0.0, 0.0))[1] for h in hours]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN))
    if not hours:
        _empty(ax, "No transfers in this window")
    else:
        x = range(len(hours))
        two_sided = any(outflow)  # token volume has one side only
        ax.bar(x, inflow, color=COLOURS[0], label="in")
        if two_sided:
            ax.bar(x, [-v for v in outflow], color=COLOURS[1], label="out")
            ax.axhline(0, color="#555", linewidth=1)
            ax.legend(loc="upper left")
        step = max(1, len(hours) // 6)
        ax.set_xticks(list(x)[::step], _labels(hours)[::step], rotation=20)
        ax.set_xlabel("hour (UTC)")
        ax.set_ylabel(_plain(unit))
    ax.set_title(_plain(title))
    return _drawn(fig, ax, title, unit)


def bars_chart(title: str, labels: Sequence[str], values: Sequence[float], ylabel: str) -> bytes:
    return draw_bars(title, labels, values, ylabel).png


def draw_bars(title: str, labels: Sequence[str], values: Sequence[float], ylabel: str) -> Chart:
    """Horizontal bars, largest first as given (top movers, GPU minutes by class)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN))
    if not labels:
        _empty(ax, "Nothing in this window")
    else:
        ax.barh(range(len(labels)), values, color=COLOURS[2])
        ax.set_yticks(range(len(labels)), [_plain(label) for label in labels])
        ax.invert_yaxis()
        ax.set_xlabel(_plain(ylabel))
    ax.set_title(_plain(title))
    return _drawn(fig, ax, title, ylabel, horizontal=True)


def series_chart(title: str, x: Sequence[int], series: dict[str, Sequence[float]], ylabel: str,
                 xlabel: str = "block") -> bytes:
    """One or more lines over blocks (gas, base fee, transfers per block)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN))
    if not x:
        _empty(ax, "No blocks indexed yet")
    else:
        for colour, (name, values) in zip(COLOURS, series.items()):
            ax.plot(list(x), list(values), color=colour, linewidth=3, label=name, marker="o" if len(x) < 40 else None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(series) > 1:
            ax.legend(loc="upper left")
    ax.set_title(title)
    return _png(fig)
