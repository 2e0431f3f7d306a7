"""The chart geometry (portal.charts): every drawn thing inside the chart, time ticks on round
local times, percentages in the reader's language."""

from datetime import datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from django.test import override_settings
from django.utils import timezone, translation
from hypothesis import given, settings
from hypothesis import strategies as st

from portal import charts

UTC = ZoneInfo("UTC")
ASUNCION = ZoneInfo("America/Asuncion")


def floats(points: str) -> list[tuple[float, float]]:
    return [tuple(map(float, point.split(","))) for point in points.split()]


def series_over(start: datetime, span: timedelta, shares: list[float]):
    step = span / (len(shares) - 1)
    return [(start + step * index, share) for index, share in enumerate(shares)]


moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
spans = st.timedeltas(min_value=timedelta(minutes=2), max_value=timedelta(days=900))
share_lists = st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=40)


@settings(max_examples=300, deadline=None)
@given(start=moments, span=spans, shares=share_lists)
def test_everything_drawn_stays_inside_the_plot(start, span, shares):
    with timezone.override(ASUNCION), translation.override("es"):
        chart = charts.share_chart(series_over(start, span, shares))
    points = floats(chart.points)
    assert len(points) == len(shares)
    for x, y in points:
        assert chart.left - 0.1 <= x <= chart.right + 0.1
        assert chart.top - 0.1 <= y <= chart.bottom + 0.1
    assert [x for x, _y in points] == sorted(x for x, _y in points)
    assert chart.share_label_x >= 0 and chart.time_label_y <= chart.height
    for tick in chart.time_ticks:
        assert chart.left - 0.1 <= tick.position <= chart.right + 0.1
        assert tick.label


@settings(max_examples=300, deadline=None)
@given(start=moments, span=spans)
def test_time_ticks_are_few_round_and_evenly_spaced_in_local_time(start, span):
    end = start + span
    with timezone.override(ASUNCION), translation.override("es"):
        ticks = charts.time_ticks(start, end)
    assert len(ticks) <= charts.MAX_TIME_TICKS
    at = [moment for moment, _label in ticks]
    assert all(start <= moment <= end for moment in at)
    assert at == sorted(at) and len(set(at)) == len(at)
    local = [timezone.localtime(moment, ASUNCION) for moment in at]
    assert all(moment.second == 0 and moment.microsecond == 0 for moment in local)
    if len(local) >= 2:
        # The same step in wall time between all ticks (a DST change moves only UTC): in
        # months, on the first of the month, or in minutes, on a multiple of the step.
        months = {(b.year - a.year) * 12 + b.month - a.month for a, b in pairwise(local)}
        if all(m.day == 1 for m in local) and len(months) == 1 and min(months) >= 1:
            assert all((m.hour, m.minute) == (0, 0) for m in local)
            assert all((m.month - 1) % min(months) == 0 for m in local)
        else:
            steps = {b.replace(tzinfo=None) - a.replace(tzinfo=None) for a, b in pairwise(local)}
            assert len(steps) == 1
            [step] = steps
            assert step in charts.TIME_STEPS
            if step >= charts.DAY:
                assert all((m.hour, m.minute) == (0, 0) for m in local)
            else:
                minutes = int(step / timedelta(minutes=1))
                assert all((m.hour * 60 + m.minute) % minutes == 0 for m in local)
    # A chart of any span has at least two labelled moments, except under one step.
    if span >= 2 * charts.TIME_STEPS[0] * charts.MAX_TIME_TICKS:
        assert len(ticks) >= 2


def test_the_share_axis_reads_0_to_100_percent_bottom_to_top_in_spanish():
    start = datetime(2026, 11, 20, 12, tzinfo=UTC)
    series = series_over(start, timedelta(days=3), [0, 0.5, 1])
    with translation.override("es"):
        chart = charts.share_chart(series, threshold=(0.9, "90 % para promover"))
    labels = [tick.label for tick in chart.share_ticks]
    assert labels == ["0\u00a0%", "25\u00a0%", "50\u00a0%", "75\u00a0%", "100\u00a0%"]
    positions = [tick.position for tick in chart.share_ticks]
    assert positions[0] == chart.bottom and positions[-1] == chart.top
    assert chart.threshold.position == round(chart.bottom - 0.9 * (chart.bottom - chart.top), 1)
    assert chart.last == "100\u00a0%"
    assert chart.rows[1] == (start + timedelta(days=1, hours=12), "50\u00a0%")
    with translation.override("en"):
        assert charts.share_chart(series).share_ticks[2].label == "50%"


@override_settings(TIME_ZONE="America/Asuncion")
def test_days_are_labelled_with_the_local_day_and_month():
    start = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)  # 12:30 in Asunción
    with timezone.override(ASUNCION), translation.override("es"):
        ticks = charts.time_ticks(start, start + timedelta(days=4))
    assert [label for _at, label in ticks] == ["21 Nov", "22 Nov", "23 Nov", "24 Nov"]
    assert timezone.localtime(ticks[0][0], ASUNCION).hour == 0
    with timezone.override(ASUNCION), translation.override("es"):
        hours = charts.time_ticks(start, start + timedelta(hours=5))
    assert [label for _at, label in hours][:2] == ["20 Nov, 13:00", "20 Nov, 14:00"]


def test_marks_inside_the_span_are_placed_and_anchored_inside_the_chart():
    start = datetime(2026, 11, 20, tzinfo=UTC)
    series = series_over(start, timedelta(days=10), [0, 0.2, 0.6, 1])
    marks = [
        (start - timedelta(days=1), "before"),
        (start + timedelta(days=1), "Ofrecida"),
        (start + timedelta(days=5), "middle"),
        (start + timedelta(days=9, hours=12), "Retirada"),
        (start + timedelta(days=11), "after"),
    ]
    chart = charts.share_chart(series, marks=marks)
    assert [(mark.label, mark.anchor) for mark in chart.marks] == [
        ("Ofrecida", "start"),
        ("middle", "middle"),
        ("Retirada", "end"),
    ]
    middle = chart.marks[1]
    assert middle.x == round((chart.left + chart.right) / 2, 1)


def test_no_chart_without_two_moments():
    at = datetime(2026, 11, 20, tzinfo=UTC)
    assert charts.share_chart([]) is None
    assert charts.share_chart([(at, 0.5)]) is None
    assert charts.share_chart([(at, 0.5), (at, 0.6)]) is None
