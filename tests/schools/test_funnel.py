"""The rollout funnel's arithmetic (schools/funnel.py), tested like a library: counts in,
shares and days out."""

from datetime import date

from schools import funnel
from schools.funnel import Count


def test_a_share_of_nothing_seen_is_unknown_not_zero():
    assert funnel.share(0, 0) is None
    assert funnel.share(0, 4) == 0
    assert funnel.share(3, 4) == 0.75


def test_a_count_knows_its_share():
    assert Count("E1", active=8, running=2).share == 0.25
    assert Count("E2", active=0, running=0).share is None


def test_totals_add_every_part_and_keep_short_unknown_when_any_part_is():
    parts = [Count("a", 10, 4, short=1), Count("b", 5, 5, short=0)]
    assert funnel.totals("all", parts) == Count("all", 15, 9, short=1)
    assert funnel.totals("all", [*parts, Count("c", 1, 0)]).short is None
    assert funnel.totals("none", []) == Count("none", 0, 0, short=0)


def test_groups_are_summed_by_key_in_key_order():
    parts = [
        Count("E1", 10, 1, key="xs1"),
        Count("E2", 10, 9, key="xs2"),
        Count("E3", 4, 4, key="xs3"),
    ]
    department = {"xs1": "Cordillera", "xs2": "Central", "xs3": "Cordillera"}
    assert funnel.grouped(parts, lambda c: department[c.key]) == [
        Count("Central", 10, 9, short=None),
        Count("Cordillera", 14, 5, short=None),
    ]


def test_the_laptops_of_no_server_are_a_group_apart_from_a_server_without_department():
    parts = [
        Count("", 3, 1, key=""),  # no school server matched their address
        Count("E1", 2, 2, key="xs1"),  # a server whose department nobody entered
        Count("E2", 5, 0, key="xs2"),
    ]
    department = {"xs1": "", "xs2": "Central"}
    groups = funnel.grouped(parts, lambda c: department[c.key] if c.key else None)
    assert [(g.label, g.active, g.no_server) for g in groups] == [
        ("", 2, False),
        ("Central", 5, False),
        ("", 3, True),
    ]


def test_laggards_come_first_then_those_with_most_laptops_left_and_unknown_last():
    parts = [
        Count("done", 10, 10),
        Count("nobody seen", 0, 0),
        Count("half of few", 2, 1),
        Count("half of many", 20, 10),
        Count("none", 3, 0),
    ]
    assert [c.label for c in funnel.laggards_first(parts)] == [
        "none",
        "half of many",
        "half of few",
        "done",
        "nobody seen",
    ]


def test_a_laptop_is_short_of_space_exactly_when_its_free_bytes_are_below_the_cost():
    for cost in (1, 1023, 1024, 1025, 10 * 1024**2 + 1):
        limit = funnel.kib_below(cost)
        for free_kib in range(max(limit - 2, 0), limit + 3):
            assert (free_kib < limit) == (free_kib * 1024 < cost), (cost, free_kib)


def test_daily_shares_skip_days_nobody_reported_and_sort_by_day():
    days = [(date(2026, 3, 3), 3, 4), (date(2026, 3, 1), 0, 5), (date(2026, 3, 2), 0, 0)]
    assert funnel.daily_shares(days) == [(date(2026, 3, 1), 0.0), (date(2026, 3, 3), 0.75)]


SERIES = [
    (date(2026, 3, 1), 0.1),
    (date(2026, 3, 2), 0.55),  # before it was offered: a pilot, not the rollout
    (date(2026, 3, 4), 0.3),
    (date(2026, 3, 6), 0.5),
    (date(2026, 3, 9), 0.89),
    (date(2026, 3, 12), 0.95),
]


def test_days_to_a_share_count_from_the_day_it_was_offered():
    offered = date(2026, 3, 3)
    assert funnel.days_to_share(SERIES, since=offered, target=0.5) == 3
    assert funnel.days_to_share(SERIES, since=offered, target=0.9) == 9


def test_a_share_reached_on_the_day_it_was_offered_took_zero_days():
    assert funnel.days_to_share(SERIES, since=date(2026, 3, 2), target=0.5) == 0


def test_a_share_not_reached_or_a_build_never_offered_has_no_days():
    assert funnel.days_to_share(SERIES, since=date(2026, 3, 3), target=0.99) is None
    assert funnel.days_to_share(SERIES, since=None, target=0.5) is None
    assert funnel.days_to_share([], since=date(2026, 3, 3), target=0.5) is None
