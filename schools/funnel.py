"""The rollout funnel's arithmetic: how many of the active laptops run a build, per group, and
how many days it took them to get there. Counts in, numbers out: no ORM, no clock, no I/O
(`selectors.laptop_funnel` does the counting in the database and passes the counts here).

Shares are of the laptops *seen* (active), never of every laptop ever registered: a laptop
that stopped reporting cannot take an update, and counting it would keep every build short
of 90 % forever.
"""

import math
from dataclasses import dataclass
from datetime import date

TARGETS = (0.5, 0.9)


def share(part: int, whole: int) -> float | None:
    """`part` / `whole`, None when there is no whole (nothing seen: unknown, not 0 %)."""
    return part / whole if whole else None


@dataclass(frozen=True)
class Count:
    """One group's laptops: `active` seen lately, `running` the build among them, `short` of
    free space for its update among them (None when the update's cost is unknown)."""

    label: str
    active: int
    running: int
    short: int | None = None
    key: str = ""
    no_server: bool = False  # the laptops whose address matches no school server

    @property
    def share(self) -> float | None:
        return share(self.running, self.active)


def totals(label: str, counts: list[Count], *, no_server: bool = False) -> Count:
    """The sum of `counts` under `label` (short stays None when any part's is unknown)."""
    shorts = [count.short for count in counts]
    return Count(
        label=label,
        active=sum(count.active for count in counts),
        running=sum(count.running for count in counts),
        short=None if None in shorts else sum(shorts),
        no_server=no_server,
    )


def grouped(counts: list[Count], key_of) -> list[Count]:
    """`counts` summed by `key_of(count)`, in key order; the key is also the label. A key
    of None is the laptops of no school server: last, apart from a key "" (a server whose
    department nobody entered)."""
    groups: dict[str | None, list[Count]] = {}
    for count in counts:
        groups.setdefault(key_of(count), []).append(count)
    order = sorted(groups, key=lambda key: (key is None, key or ""))
    return [totals(key or "", groups[key], no_server=key is None) for key in order]


def laggards_first(counts: list[Count]) -> list[Count]:
    """Lowest share first (unknown last), then the most laptops left to update."""
    return sorted(
        counts,
        key=lambda c: (c.share is None, c.share or 0, -(c.active - c.running), c.label),
    )


def kib_below(cost_bytes: int) -> int:
    """The free space in KiB under which a laptop cannot hold an update of `cost_bytes`:
    `free_kib * 1024 < cost_bytes` exactly when `free_kib < kib_below(cost_bytes)`."""
    return math.ceil(cost_bytes / 1024)


def daily_shares(days: list[tuple[date, int, int]]) -> list[tuple[date, float]]:
    """[(day, share)] from [(day, laptops running the build, laptops reporting)], in day
    order; days nobody reported on are left out (no share to draw)."""
    return [(day, running / seen) for day, running, seen in sorted(days) if seen]


def days_to_share(
    series: list[tuple[date, float]], *, since: date | None, target: float
) -> int | None:
    """Whole days from `since` (the day it was first offered) to the first day on or after it
    whose share reached `target`; None when not offered or not reached yet."""
    if since is None:
        return None
    for day, value in series:
        if day >= since and value >= target:
            return (day - since).days
    return None
