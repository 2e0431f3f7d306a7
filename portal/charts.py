"""Charts people can read, drawn on the server as SVG: a share (0 to 100 %) over time, with
its axes, dates, percentages, a threshold and marked moments.

This module computes the geometry and the labels; the template draws them with classes
(no script, no inline style: the portal's Content-Security-Policy allows neither). No ORM:
the caller passes the series and the moments.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import formats, timezone

from .humanize import percent

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MONTH = timedelta(days=30.44)  # on average; month ticks fall on the first of the month
# The spacings the time axis may use, smallest first: the first that gives at most
# MAX_TIME_TICKS ticks over the chart's span wins. Each is at most about twice the one
# before, so the one that wins still gives at least two ticks.
TIME_STEPS = [timedelta(minutes=minutes) for minutes in (5, 10, 15, 30)]
TIME_STEPS += [HOUR * hours for hours in (1, 2, 3, 6, 12)]
TIME_STEPS += [DAY * days for days in (1, 2, 3, 4, 7, 14)]
TIME_STEPS += [MONTH * months for months in (1, 2, 3, 6, 12)]
MAX_TIME_TICKS = 6
SHARE_TICKS = [0, 0.25, 0.5, 0.75, 1]
# Room around the plot for the labels, in SVG units.
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 22, 34


@dataclass(frozen=True)
class Tick:
    position: float  # along its axis, in SVG units
    label: str


@dataclass(frozen=True)
class Mark:
    """A moment drawn as a vertical line with its label (e.g. "Offered")."""

    x: float
    label: str
    when: datetime
    anchor: str  # SVG text-anchor, so a label near an edge stays inside the chart


@dataclass(frozen=True)
class ShareChart:
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    points: str  # the polyline's points
    time_ticks: list[Tick]
    share_ticks: list[Tick]
    threshold: Tick | None  # a horizontal line, e.g. the coverage needed to promote
    marks: list[Mark]
    rows: list[tuple[datetime, str]]  # the series as a table, for readers without the picture
    start: datetime
    end: datetime
    last: str

    # Where the labels go, beside the axes they name.
    @property
    def share_label_x(self) -> float:
        return self.left - 6

    @property
    def time_label_y(self) -> float:
        return self.bottom + 18

    @property
    def tick_end_y(self) -> float:
        return self.bottom + 5

    @property
    def mark_label_y(self) -> float:
        return self.top - 6

    @property
    def threshold_label_y(self) -> float:
        return self.threshold.position - 4 if self.threshold else 0


def share_chart(
    series: list[tuple[datetime, float]],
    *,
    marks: list[tuple[datetime, str]] = (),
    threshold: tuple[float, str] | None = None,
    width: int = 640,
    height: int = 260,
) -> ShareChart | None:
    """The chart of `series` ([(moment, share 0..1)], in time order); None with fewer than
    two moments. `marks` outside the series' span are left out. Labels are in the active
    language and time zone."""
    if len(series) < 2 or series[-1][0] <= series[0][0]:
        return None
    start, end = series[0][0], series[-1][0]
    left, right, top, bottom = LEFT, width - RIGHT, TOP, height - BOTTOM

    def x(moment: datetime) -> float:
        return left + (moment - start) / (end - start) * (right - left)

    def y(share: float) -> float:
        return bottom - max(0.0, min(1.0, share)) * (bottom - top)

    shown_marks = []
    for when, label in marks:
        if start <= when <= end:
            position = x(when)
            share = (position - left) / (right - left)
            anchor = "start" if share < 0.2 else "end" if share > 0.8 else "middle"
            shown_marks.append(Mark(round(position, 1), label, when, anchor))
    return ShareChart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        points=" ".join(f"{x(at):.1f},{y(share):.1f}" for at, share in series),
        time_ticks=[Tick(round(x(at), 1), label) for at, label in time_ticks(start, end)],
        share_ticks=[Tick(round(y(share), 1), percent(share)) for share in SHARE_TICKS],
        threshold=(
            Tick(round(y(threshold[0]), 1), threshold[1]) if threshold is not None else None
        ),
        marks=shown_marks,
        rows=[(at, percent(share)) for at, share in series],
        start=start,
        end=end,
        last=percent(series[-1][1]),
    )


def time_ticks(start: datetime, end: datetime) -> list[tuple[datetime, str]]:
    """Round moments between `start` and `end` at one of TIME_STEPS, in local time: times of
    day on a multiple of the step, midnights, or the first of a month; with their labels
    (day and month, plus the time under a day; month and year for months)."""
    local = timezone.localtime(start)
    for step in TIME_STEPS:
        if (end - start) / step > MAX_TIME_TICKS + 1:
            continue  # too many, without counting them
        ticks = _ticks(local, end, step, limit=MAX_TIME_TICKS + 1)
        if len(ticks) <= MAX_TIME_TICKS:
            break
    if step < DAY:
        label_format = "j M, H:i"
    elif step < MONTH:
        label_format = "j M"
    else:
        label_format = "M Y"
    return [(moment, formats.date_format(moment, label_format)) for moment in ticks]


def _ticks(local: datetime, end: datetime, step: timedelta, *, limit: int) -> list[datetime]:
    """The ticks from `local` (the start, in local time) to `end` at `step`, at most
    `limit` of them."""
    zone = local.tzinfo
    if step < DAY:
        # From the last local time of day before the start that is a multiple of the step.
        minutes = local.hour * 60 + local.minute
        minutes -= minutes % int(step / timedelta(minutes=1))
        first = local.replace(hour=minutes // 60, minute=minutes % 60, second=0, microsecond=0)
    else:
        first = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if step >= MONTH:
        months = round(step / MONTH)
        month = (first.month - 1) // months * months  # 0-based, a multiple of the step
        first = first.replace(month=month + 1, day=1)
    first = first.replace(tzinfo=None)
    ticks, index = [], 0
    while True:
        # Stepped in wall time: a tick stays on its hour, or at midnight, across a DST change.
        if step >= MONTH:
            total = first.month - 1 + months * index
            wall = first.replace(year=first.year + total // 12, month=total % 12 + 1)
        else:
            wall = first + step * index
        at = timezone.make_aware(wall, zone)
        if at > end or len(ticks) == limit:
            return ticks
        if at >= local:
            ticks.append(at)
        index += 1
