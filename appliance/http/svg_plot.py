"""The status page's plots, drawn on the server as inline SVG: no script, no external asset.

Pure: points in, one ``<svg>`` element out (text, every value escaped). Two plots of the
clock's history (:mod:`appliance.clock.history`) over a window ending now:

- :func:`offset_plot` — each source's offset from the ensemble over the shaded ±bound
  band, on a linear scale fitted to the band: a source whose line leaves the band
  disagrees with the consensus, one far off runs along the edge;
- :func:`bound_plot` — the bound on a log scale, with the policy's maximum error as a red
  line: in holdover the bound climbs towards it, and tokens stop when it is crossed.

Under each, a strip coloured by verdict (green issuing, amber holdover, red refusing) says
when the appliance was in which state. The horizontal axis is the raw-monotonic clock's
(minutes or hours before now), never the host's wall clock, which anyone may step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from appliance.clock.history import HistoryPoint, Verdict
from drivers.monotonic import NS_PER_S

WIDTH = 560
HEIGHT = 230
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 26, 46
PLOT_W = WIDTH - LEFT - RIGHT
PLOT_H = HEIGHT - TOP - BOTTOM
STRIP_H = 7
OFF_SCALE_BOUNDS = 4  # the offset plot's scale: at most this many times the widest bound

VERDICT_COLOURS = {
    Verdict.ISSUING: "#1e7b34",
    Verdict.HOLDOVER: "#c77800",
    Verdict.REFUSING: "#b3261e",
}
SOURCE_COLOURS = ("#1f5fbf", "#e07b00", "#00897b", "#c2185b", "#8a5a2b", "#7b3fc4", "#5f6b00")


@dataclass(frozen=True, slots=True)
class Window:
    """The plot's horizontal extent: ``span_s`` seconds up to ``now_ns`` (raw monotonic);
    a gap longer than ``gap_s`` between points breaks a line."""

    now_ns: int
    span_s: float
    gap_s: float
    ticks: tuple[tuple[float, str], ...]  # (seconds before now, label)


def hour_window(now_ns: int, step_s: float) -> Window:
    ticks = tuple((m * 60.0, f"−{m} min" if m else "now") for m in (60, 45, 30, 15, 0))
    return Window(now_ns, 3600.0, 3.5 * step_s, ticks)


def day_window(now_ns: int, bucket_s: float) -> Window:
    ticks = tuple((h * 3600.0, f"−{h} h" if h else "now") for h in (24, 18, 12, 6, 0))
    return Window(now_ns, 86_400.0, 2.5 * bucket_s, ticks)


def colour_of(index: int) -> str:
    return SOURCE_COLOURS[index % len(SOURCE_COLOURS)]


def offset_plot(
    points: Sequence[HistoryPoint], names: Sequence[str], window: Window, title: str
) -> str:
    """Each source's offset (source − ensemble) over the ±bound band, on a linear scale
    wide enough for the band and the offsets, but no wider than ``OFF_SCALE_BOUNDS`` times
    the widest bound: a source further out runs along the edge (off scale, as its table
    row says), and does not flatten the others into a line."""
    bounds = [p.bound_ns for p in points if p.bound_ns is not None]
    offsets = [abs(o) for p in points for o in p.offsets_ns if o is not None]
    widest = max([*bounds, *offsets], default=1_000)
    if bounds:
        widest = min(widest, OFF_SCALE_BOUNDS * max(bounds))
    extent = _nice(max(widest, 1_000) / NS_PER_S)

    def y(seconds: float) -> float:
        clipped = max(-extent, min(extent, seconds))
        return TOP + PLOT_H / 2 - clipped / extent * (PLOT_H / 2)

    ticks = [(v * extent, _signed_label(v * extent)) for v in (1, 0.5, 0, -0.5, -1)]
    parts = [_frame(title, window, points), _y_ticks(ticks, y)]
    band = [(p.mono_ns, None if p.bound_ns is None else p.bound_ns / NS_PER_S) for p in points]
    for run in _runs(band, window):
        upper = [(x, y(v)) for x, v in run]
        lower = [(x, y(-v)) for x, v in reversed(run)]
        parts.append(f'<polygon class="band" points="{_coords(upper + lower)}"/>')
    for i, name in enumerate(names):
        series = [(p.mono_ns, _offset(p, name)) for p in points]
        parts.append(_lines(series, window, y, colour_of(i), name))
    parts.append(_strip(points, window))
    return _svg(title, parts)


def bound_plot(
    points: Sequence[HistoryPoint], max_error_s: float, window: Window, title: str
) -> str:
    """The bound, log scale, under the policy's maximum error (the red line)."""
    bounds = [p.bound_ns / NS_PER_S for p in points if p.bound_ns]
    top = _decade_above(max([*bounds, max_error_s]), floor=-5)
    bottom = min(_decade_above(min(bounds, default=max_error_s), floor=-9) - 1, top - 2)

    def y(seconds: float) -> float:
        v = math.log10(max(seconds, 10.0**bottom))
        return TOP + PLOT_H - (v - bottom) / (top - bottom) * PLOT_H

    step = 1 if top - bottom <= 5 else 3
    ticks = [(10.0**k, _decade_label(k)) for k in range(top, bottom - 1, -step)]
    limit = y(max_error_s)
    parts = [
        _frame(title, window, points),
        _y_ticks(ticks, y),
        f'<line class="limit" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{limit:.1f}" y2="{limit:.1f}"/>',
        f'<text class="limit-label" x="{LEFT + PLOT_W - 4}" y="{limit - 4:.1f}" '
        f'text-anchor="end">max error {escape(_seconds_label(max_error_s))}</text>',
    ]
    series = [(p.mono_ns, None if p.bound_ns is None else p.bound_ns / NS_PER_S) for p in points]
    parts.append(_lines(series, window, y, "#222", "bound"))
    parts.append(_strip(points, window))
    return _svg(title, parts)


# ------------------------------------------------------------------------------ drawing


def _svg(title: str, parts: list[str]) -> str:
    return (
        f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        + "".join(parts)
        + "</svg>"
    )


def _frame(title: str, window: Window, points: Sequence[HistoryPoint]) -> str:
    out = [
        f'<rect class="area" x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}"/>',
        f'<text class="title" x="{LEFT}" y="{TOP - 9}">{escape(title)}</text>',
    ]
    if len(points) < 2:  # just started: say so, rather than show an empty frame
        out.append(
            f'<text class="empty" x="{LEFT + PLOT_W / 2:.0f}" y="{TOP + PLOT_H / 2 - 8:.0f}" '
            'text-anchor="middle">no history yet: recording since start-up</text>'
        )
    for before_s, label in window.ticks:
        x = LEFT + PLOT_W * (1 - before_s / window.span_s)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + PLOT_H}"/>')
        anchor = "start" if before_s == window.span_s else "end" if before_s == 0 else "middle"
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
            f"{escape(label)}</text>"
        )
    return "".join(out)


def _y_ticks(ticks: list[tuple[float, str]], y: Callable[[float], float]) -> str:
    out = []
    for value, label in ticks:
        at = y(value)
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{at:.1f}" y2="{at:.1f}"/>'
            f'<text class="tick" x="{LEFT - 5}" y="{at + 4:.1f}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
    return "".join(out)


def _lines(
    series: list[tuple[int, float | None]],
    window: Window,
    y: Callable[[float], float],
    colour: str,
    name: str,
) -> str:
    out = []
    for run in _runs(series, window):
        coords = [(x, y(v)) for x, v in run]
        if len(coords) == 1:  # a lone point: a dot, not an invisible line
            x0, y0 = coords[0]
            out.append(f'<circle cx="{x0:.1f}" cy="{y0:.1f}" r="2" fill="{colour}"/>')
        else:
            out.append(
                f'<polyline class="line" data-series="{escape(name)}" stroke="{colour}" '
                f'points="{_coords(coords)}"/>'
            )
    return "".join(out)


def _strip(points: Sequence[HistoryPoint], window: Window) -> str:
    """The verdict under the plot, one rectangle per run of equal verdicts."""
    top = TOP + PLOT_H + 4
    out = [f'<rect class="strip-none" x="{LEFT}" y="{top}" width="{PLOT_W}" height="{STRIP_H}"/>']
    gap_ns = window.gap_s * NS_PER_S
    i = 0
    while i < len(points):
        j = i
        while (
            j + 1 < len(points)
            and points[j + 1].verdict is points[i].verdict
            and points[j + 1].mono_ns - points[j].mono_ns <= gap_ns
        ):
            j += 1
        end_ns = points[j].mono_ns
        if j + 1 < len(points) and points[j + 1].mono_ns - end_ns <= gap_ns:
            end_ns = points[j + 1].mono_ns  # up to where the next verdict starts
        x0, x1 = _x(points[i].mono_ns, window), _x(end_ns, window)
        out.append(
            f'<rect class="strip-{points[i].verdict.value}" x="{x0:.1f}" y="{top}" '
            f'width="{max(x1 - x0, 1.5):.1f}" height="{STRIP_H}" '
            f'fill="{VERDICT_COLOURS[points[i].verdict]}"/>'
        )
        i = j + 1
    return "".join(out)


def _runs(
    series: list[tuple[int, float | None]], window: Window
) -> list[list[tuple[float, float]]]:
    """The series in pixels along x, split where a value is missing or a gap is too long."""
    runs: list[list[tuple[float, float]]] = []
    last_ns: int | None = None
    for mono_ns, value in series:
        if value is None:
            last_ns = None
            continue
        if last_ns is None or mono_ns - last_ns > window.gap_s * NS_PER_S:
            runs.append([])
        runs[-1].append((_x(mono_ns, window), value))
        last_ns = mono_ns
    return runs


def _x(mono_ns: int, window: Window) -> float:
    before_s = (window.now_ns - mono_ns) / NS_PER_S
    return LEFT + PLOT_W * (1 - min(max(before_s, 0.0), window.span_s) / window.span_s)


def _coords(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _offset(point: HistoryPoint, name: str) -> float | None:
    off = point.offset_of(name)
    return None if off is None else off / NS_PER_S


# ------------------------------------------------------------------------------ scales


def _nice(seconds: float) -> float:
    """The smallest 1, 2 or 5 × 10^k ≥ ``seconds``."""
    k = math.floor(math.log10(seconds))
    for m in (1, 2, 5, 10):
        if m * 10.0**k >= seconds * (1 - 1e-9):
            return m * 10.0**k
    return 10.0 ** (k + 1)


def _signed_label(seconds: float) -> str:
    if seconds == 0:
        return "0"
    return ("+" if seconds > 0 else "−") + _seconds_label(abs(seconds))


def _decade_above(seconds: float, *, floor: int) -> int:
    """The smallest power of ten ≥ ``seconds``, no lower than 10^floor."""
    if seconds <= 0:
        return floor
    return max(floor, math.ceil(math.log10(seconds) - 1e-9))


def _decade_label(k: int) -> str:
    for unit, exp in (("s", 0), ("ms", -3), ("µs", -6), ("ns", -9)):
        if k >= exp:
            return f"{10 ** (k - exp)} {unit}"
    return f"1e{k} s"


def _seconds_label(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.4g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.4g} ms"
    return f"{seconds * 1e6:.4g} µs"
