"""Named reads about school servers. Every function here runs a fixed number of queries,
whatever the number of servers and builds (dashboards must stay fast at 4,000 schools)."""

import unicodedata
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    IntegerField,
    OuterRef,
    Q,
    Sum,
    Value,
    When,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.humanize import percent
from releases.audit import AuditAction
from releases.models import AuditEvent, Build, BuildStatus

from . import funnel
from .models import HELD_STATUSES, Laptop, LaptopDay, SchoolServer, SyncState

# The coverage page lists this many of the servers without the build; the overview
# (`filter_servers(lacks=...)`) has them all, in pages and as CSV.
MISSING_SHOWN = 25

STATES = {
    "up_to_date": _("Up to date"),
    "behind": _("Behind"),
    "silent": _("Silent"),
    "lost": _("Lost"),
    "never": _("Never seen"),
    "inactive": _("Inactive"),
}


@dataclass(frozen=True)
class Coverage:
    """How far a build has spread among the active school servers."""

    share: float | None
    active_servers: int
    holding: int = 0
    missing: list = field(default_factory=list)
    missing_count: int = 0

    @property
    def known(self) -> bool:
        return self.share is not None

    @property
    def percent_label(self) -> str:
        return percent(self.share)


def _held(build):
    return SyncState.objects.filter(server=OuterRef("pk"), build=build, status__in=HELD_STATUSES)


def build_coverage(build, *, missing_limit: int = MISSING_SHOWN) -> Coverage:
    """Share of active school servers that report holding `build` (present or verified).

    Unknown (None) while no active server has ever reported anything: a portal whose
    school servers do not report cannot say how far a build has spread."""
    active = SchoolServer.objects.active()
    totals = active.aggregate(
        servers=Count("pk"), reporting=Count("pk", filter=Q(last_report_at__isnull=False))
    )
    if not totals["servers"] or not totals["reporting"]:
        return Coverage(share=None, active_servers=totals["servers"])
    # A count of the build's held rows (one per server: one_state_per_build), read from
    # syncstate_build_held, rather than a test of every server.
    holding = _held_by_active(build).count()
    lagging = (
        active.exclude(Exists(_held(build)))
        .order_by("department", "school", "hostname")
        .only("hostname", "school", "department", "last_report_at")
    )
    return Coverage(
        share=holding / totals["servers"],
        active_servers=totals["servers"],
        holding=holding,
        missing=list(lagging[:missing_limit]) if holding < totals["servers"] else [],
        missing_count=totals["servers"] - holding,
    )


def _held_by_active(build):
    return SyncState.objects.filter(build=build, status__in=HELD_STATUSES, server__active=True)


def coverage_series(build, *, now=None, points: int = 30, total=None) -> list[tuple]:
    """(time, share) from publication to now, from when each active server first held it.

    Counted by the database in one pass: how many servers' `held_since` first falls at
    or before each moment, summed here into the running total. Sending every server's time
    to Python took a large share of the page's time at 5,000 servers; a count per moment
    (thirty filters over every row), most of the rest. `total`: the active servers, when
    the caller has counted them (`Coverage.active_servers`)."""
    now = now or timezone.now()
    start = build.published_at or build.created_at
    if total is None:
        total = SchoolServer.objects.active().count()
    if not total or now <= start:
        return []
    step = (now - start) / max(points - 1, 1)
    moments = [start + step * point for point in range(points)]
    rows = (
        SyncState.objects.filter(build=build, server__active=True, held_since__isnull=False)
        .annotate(step=_first_moment_at_or_after("held_since", moments))
        .values("step")
        .annotate(n=Count("*"))
        .order_by()
    )
    per_step = [0] * (points + 1)  # the last: held after `now` (a clock set ahead)
    for row in rows:
        per_step[row["step"]] += row["n"]
    series, held = [], 0
    for at, count in zip(moments, per_step[:points], strict=True):
        held += count
        series.append((at, held / total))
    return series


def _first_moment_at_or_after(field: str, moments: list) -> RawSQL:
    """SQL for the index of the first of `moments` (in time order) at or after SyncState's
    `field`, len(moments) when it is after them all. Written out rather than as Case and
    When: thirty of those cost more to build and compile than the query took to run."""
    ops = connection.ops
    column = f"{ops.quote_name(SyncState._meta.db_table)}.{ops.quote_name(field)}"
    whens = " ".join(f"WHEN {column} <= %s THEN {index}" for index in range(len(moments)))
    params = [ops.adapt_datetimefield_value(moment) for moment in moments]
    # Only a quoted column name and integers are written into it; the moments are params.
    sql = f"CASE {whens} ELSE {len(moments)} END"
    return RawSQL(sql, params, output_field=IntegerField())  # noqa: S611


def offer_changes(build) -> list[tuple]:
    """(time, OFFERED or WITHDRAWN) of each time `build` started or stopped being offered
    in updates.cfg, from its audit trail, oldest first (one query)."""
    events = AuditEvent.objects.filter(
        build=build, action=AuditAction.STATUS, to_status__in=OFFER_CHANGES
    ).order_by("at", "pk")
    return list(events.values_list("at", "to_status"))


def offer_marks(changes) -> list[tuple]:
    """`offer_changes` as (time, label) marks for a chart."""
    labels = {status: BuildStatus(status).label for status in OFFER_CHANGES}
    return [(at, labels[status]) for at, status in changes]


def first_offered_at(changes):
    """When the build of `offer_changes` was first offered, or None."""
    return next((at for at, status in changes if status == BuildStatus.OFFERED), None)


OFFER_CHANGES = [BuildStatus.OFFERED, BuildStatus.WITHDRAWN]


def newest_offered_build():
    from releases.models import OfferedEntry

    entry = (
        OfferedEntry.objects.active()
        .filter(build__isnull=False)
        .select_related("build")
        .order_by("-position")
        .first()
    )
    return entry.build if entry else None


def servers_with_state(*, now=None, newest=None):
    """Every server annotated with `state` (one of STATES); `with_has_newest` adds whether
    it holds `newest` (a second test of every server: only the export needs it)."""
    now = now or timezone.now()
    silent = now - timedelta(seconds=settings.SCHOOL_SILENT_AFTER)
    lost = now - timedelta(seconds=settings.SCHOOL_LOST_AFTER)
    up_to_date = Exists(_held(newest)) if newest is not None else Q(pk__isnull=False)
    return SchoolServer.objects.annotate(
        state=Case(
            When(active=False, then=Value("inactive")),
            When(last_report_at__isnull=True, then=Value("never")),
            When(last_report_at__lt=lost, then=Value("lost")),
            When(last_report_at__lt=silent, then=Value("silent")),
            When(up_to_date, then=Value("up_to_date")),
            default=Value("behind"),
            output_field=CharField(),
        )
    )


def with_has_newest(servers, newest):
    """`servers` annotated with `has_newest`: holds `newest` (True when nothing is offered)."""
    if newest is None:
        return servers.annotate(has_newest=Value(True))
    return servers.annotate(has_newest=Exists(_held(newest)))


def state_counts(servers) -> dict:
    counts = dict.fromkeys(STATES, 0)
    for row in servers.order_by().values("state").annotate(n=Count("pk")):
        counts[row["state"]] = row["n"]
    return counts


def state_counts_and_departments(servers) -> tuple[dict, list[str]]:
    """`state_counts(servers)` and the departments they are in (for the filter, in
    `name_order`), in one pass: the overview reads both, one GROUP BY of a hundred or so
    rows instead of two scans of every server."""
    counts = dict.fromkeys(STATES, 0)
    departments = set()
    # Unordered: sorting every server by a collated name cost more than the GROUP BY.
    for row in servers.values("department", "state").annotate(n=Count("pk")).order_by():
        counts[row["state"]] += row["n"]
        if row["department"]:
            departments.add(row["department"])
    return counts, sorted(departments, key=name_order)


def name_order(name: str) -> tuple[str, str]:
    """A sort key for place names as a reader expects them, the same on every database:
    case and accents aside (Itapúa between Guairá and Misiones, Ñeembucú among the N), then
    the exact name to break ties."""
    bare = unicodedata.normalize("NFKD", name.casefold())
    return "".join(char for char in bare if not unicodedata.combining(char)), name


def filter_servers(servers, *, department="", state="", search="", lacks=None):
    """`servers` narrowed to a department, a state, a search in host name, school and
    name, and the active servers not holding the build `lacks` (as `build_coverage` counts
    them)."""
    if lacks is not None:
        servers = servers.filter(active=True).exclude(Exists(_held(lacks)))
    if department:
        servers = servers.filter(department=department)
    if state in STATES:
        servers = servers.filter(state=state)
    if search:
        servers = servers.filter(
            Q(hostname__icontains=search) | Q(school__icontains=search) | Q(name__icontains=search)
        )
    return servers


def coverage_shares(build_ids) -> dict:
    """`build_coverage(...).share` for many builds at once, in two queries: build id →
    share of active servers holding it (None while no active server has reported)."""
    build_ids = list(build_ids)
    totals = SchoolServer.objects.active().aggregate(
        servers=Count("pk"), reporting=Count("pk", filter=Q(last_report_at__isnull=False))
    )
    if not totals["servers"] or not totals["reporting"]:
        return dict.fromkeys(build_ids)
    held = dict(
        SyncState.objects.filter(
            build_id__in=list(build_ids), server__active=True, status__in=HELD_STATUSES
        )
        .values("build_id")
        .annotate(n=Count("server_id", distinct=True))
        .values_list("build_id", "n")
    )
    return {pk: held.get(pk, 0) / totals["servers"] for pk in build_ids}


# --- Laptops ---------------------------------------------------------------------------------


def builds_by_vhash(vhashes) -> dict:
    """{vhash: build} of the builds whose contents hash is one of `vhashes` (laptops report
    it in lower case), in one query. A vhash it leaves out is an "unknown version" on the
    pages: a build the portal does not have, or whose hash nobody entered yet."""
    wanted = {vhash.lower() for vhash in vhashes if vhash}
    if not wanted:
        return {}
    builds = Build.objects.annotate(vhash=Lower("contents_hash")).filter(vhash__in=wanted)
    return {build.vhash: build for build in builds}


def active_since(now=None):
    """Laptops seen since this moment are active (LAPTOP_ACTIVE_DAYS)."""
    return (now or timezone.now()) - timedelta(days=settings.LAPTOP_ACTIVE_DAYS)


def _vhash(build) -> str:
    return (build.contents_hash or "").lower() if build is not None else ""


# The funnel lists the school servers with the lowest shares, at most this many.
SERVERS_SHOWN = 50


@dataclass(frozen=True)
class LaptopFunnel:
    """A build's last step of the funnel: the active laptops running it, in all, per
    department and per school server (laggards first), and the days to 50 % and 90 %."""

    vhash: str
    total: funnel.Count
    departments: list
    servers: list  # the SERVERS_SHOWN lowest shares
    servers_count: int  # servers with active laptops
    offered_at: object  # datetime | None: when it was first offered in updates.cfg
    series: list  # [(day, share of the laptops reporting that day)]
    days_to: dict  # {target: days | None}
    cost_bytes: int | None  # the update's laptop cost, when known
    counted_at: object  # datetime: when the database counted them
    key: str = ""  # what it is kept under (the page keeps its HTML under it too)


def laptop_funnel(build, *, now=None, cost_bytes=None, offered_at=None) -> LaptopFunnel:
    """The laptops' step of `build`'s funnel: `_laptop_counts` with the arithmetic of
    `funnel` applied, the whole kept LAPTOP_FUNNEL_CACHE_SECONDS (counting reads every
    active laptop; a kept result is a small object to unpickle)."""
    now = now or timezone.now()
    vhash = _vhash(build)
    start = timezone.localdate(build.published_at or build.created_at)
    # The version (4): bumped when LaptopFunnel or the page's laptops section changes, so
    # a shared cache (CACHE_URL) serves nothing kept by the code before a deploy.
    key = (
        f"laptop-funnel:4:{build.pk}:{vhash}:{start}:{cost_bytes}:"
        f"{offered_at.timestamp() if offered_at else ''}:"
        f"{settings.LAPTOP_ACTIVE_DAYS}"
    )
    kept = cache.get(key) if settings.LAPTOP_FUNNEL_CACHE_SECONDS else None
    if kept is not None:
        return kept
    counted = _laptop_counts(vhash, start=start, now=now, cost_bytes=cost_bytes)
    servers = counted["servers"]
    counts = [
        funnel.Count(
            label=servers[pk][1] or servers[pk][0] if pk in servers else "",
            key=servers[pk][0] if pk in servers else "",
            active=active,
            running=running,
            short=short,
        )
        for pk, active, running, short in counted["rows"]
    ]
    departments_of = {hostname: department for hostname, _school, department in servers.values()}
    series = funnel.daily_shares(counted["days"])
    since = timezone.localdate(offered_at) if offered_at else None
    with_server = [count for count in counts if count.key]
    result = LaptopFunnel(
        vhash=vhash,
        total=funnel.totals("", counts),
        departments=funnel.grouped(
            counts, lambda c: (departments_of.get(c.key) or "") if c.key else None
        ),
        servers=funnel.laggards_first(with_server)[:SERVERS_SHOWN],
        servers_count=len(with_server),
        offered_at=offered_at,
        series=series,
        days_to={
            target: funnel.days_to_share(series, since=since, target=target)
            for target in funnel.TARGETS
        },
        cost_bytes=cost_bytes,
        counted_at=now,
        key=key,
    )
    if settings.LAPTOP_FUNNEL_CACHE_SECONDS:
        cache.set(key, result, settings.LAPTOP_FUNNEL_CACHE_SECONDS)
    return result


def _laptop_counts(vhash, *, start, now, cost_bytes) -> dict:
    """Counted by the database in three queries whatever the number of laptops:
    1. the active laptops per school server id, running `vhash`, short of space (GROUP BY
       the id alone: joining the servers' names into a million-row GROUP BY doubled it);
    2. every server's host name, school and department;
    3. the laptops reporting per day since `start` (LaptopDay), running `vhash` or not."""
    running = Q(vhash=vhash) if vhash else Q(pk__in=[])
    # Counted by last_seen_at (never null), not the id: laptop_server_seen holds every
    # column these read, so PostgreSQL counts from the index alone.
    seen = "last_seen_at"
    aggregates = {"active": Count(seen), "running": Count(seen, filter=running)}
    if cost_bytes is not None:
        below = Q(free_space_kib__lt=funnel.kib_below(cost_bytes))
        aggregates["short"] = Count(seen, filter=below)
    rows = (
        Laptop.objects.filter(last_seen_at__gte=active_since(now))
        .values("server_id")
        .annotate(**aggregates)
        .order_by()
    )
    servers = SchoolServer.objects.values_list("pk", "hostname", "school", "department")
    days = (
        LaptopDay.objects.filter(day__gte=start)
        .values("day")
        .annotate(seen=Sum("laptops"), running=Sum("laptops", filter=running))
        .order_by("day")
    )
    return {
        "rows": [
            (row["server_id"], row["active"], row["running"], row.get("short")) for row in rows
        ],
        "servers": {
            pk: (hostname, school, department) for pk, hostname, school, department in servers
        },
        "days": [(d["day"], d["running"] or 0, d["seen"]) for d in days],
    }


def laptops_per_server(server_ids, build, *, now=None) -> dict:
    """{server id: (laptops running `build`, active laptops)} in one GROUP BY query (from
    laptop_server_seen alone on PostgreSQL)."""
    vhash = _vhash(build)
    running = Q(vhash=vhash) if vhash else Q(pk__in=[])
    rows = (
        Laptop.objects.filter(server_id__in=list(server_ids), last_seen_at__gte=active_since(now))
        .values("server_id")
        .annotate(active=Count("last_seen_at"), running=Count("last_seen_at", filter=running))
        .order_by()
    )
    return {row["server_id"]: (row["running"], row["active"]) for row in rows}


@dataclass(frozen=True)
class LaptopVersion:
    vhash: str
    build: object  # Build | None: None is an unknown version
    laptops: int
    active: int


def server_laptop_versions(server, *, now=None) -> list[LaptopVersion]:
    """The versions `server`'s laptops run, most laptops first, with the builds they are
    (two queries: one GROUP BY, one for the builds)."""
    rows = list(
        Laptop.objects.filter(server=server)
        .values("vhash")
        .annotate(
            laptops=Count("pk"), active=Count("pk", filter=Q(last_seen_at__gte=active_since(now)))
        )
        .order_by("-laptops", "vhash")
    )
    builds = builds_by_vhash(row["vhash"] for row in rows)
    return [
        LaptopVersion(
            vhash=row["vhash"],
            build=builds.get(row["vhash"].lower()),
            laptops=row["laptops"],
            active=row["active"],
        )
        for row in rows
    ]
