"""Named reads about school servers. Every function here runs a fixed number of queries,
whatever the number of servers and builds (dashboards must stay fast at 4,000 schools)."""

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import Case, CharField, Count, Exists, OuterRef, Q, Value, When
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.humanize import percent
from releases.audit import AuditAction
from releases.models import AuditEvent, Build, BuildStatus

from .models import HELD_STATUSES, SchoolServer, SyncState

MISSING_SHOWN = 200

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
        servers=Count("pk"),
        reporting=Count("pk", filter=Q(last_report_at__isnull=False)),
        holding=Count("pk", filter=Q(Exists(_held(build)))),
    )
    if not totals["servers"] or not totals["reporting"]:
        return Coverage(share=None, active_servers=totals["servers"])
    lagging = active.exclude(Exists(_held(build))).order_by("department", "school", "hostname")
    return Coverage(
        share=totals["holding"] / totals["servers"],
        active_servers=totals["servers"],
        holding=totals["holding"],
        missing=list(lagging[:missing_limit]),
        missing_count=totals["servers"] - totals["holding"],
    )


def coverage_series(build, *, now=None, points: int = 30) -> list[tuple]:
    """(time, share) from publication to now, from when each active server first held it.

    Counted by the database, one count per point in one query: sending every server's
    time to Python took a large share of the page's time at 5,000 servers."""
    now = now or timezone.now()
    start = build.published_at or build.created_at
    total = SchoolServer.objects.active().count()
    if not total or now <= start:
        return []
    step = (now - start) / max(points - 1, 1)
    moments = [start + step * point for point in range(points)]
    held = SyncState.objects.filter(build=build, server__active=True, held_since__isnull=False)
    counts = held.aggregate(
        **{f"p{i}": Count("pk", filter=Q(held_since__lte=at)) for i, at in enumerate(moments)}
    )
    return [(at, counts[f"p{i}"] / total) for i, at in enumerate(moments)]


def offer_moments(build) -> list[tuple]:
    """(time, label) of each time `build` started or stopped being offered in updates.cfg,
    from its audit trail, oldest first."""
    labels = {status: BuildStatus(status).label for status in OFFER_CHANGES}
    events = AuditEvent.objects.filter(
        build=build, action=AuditAction.STATUS, to_status__in=OFFER_CHANGES
    ).order_by("at", "pk")
    return [(at, labels[status]) for at, status in events.values_list("at", "to_status")]


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
    """Every server annotated with `state` (one of STATES) and `has_newest`."""
    now = now or timezone.now()
    silent = now - timedelta(seconds=settings.SCHOOL_SILENT_AFTER)
    lost = now - timedelta(seconds=settings.SCHOOL_LOST_AFTER)
    servers = SchoolServer.objects.all()
    if newest is not None:
        servers = servers.annotate(has_newest=Exists(_held(newest)))
        up_to_date = Q(has_newest=True)
    else:
        servers = servers.annotate(has_newest=Value(True))
        up_to_date = Q(pk__isnull=False)
    return servers.annotate(
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


def state_counts(servers) -> dict:
    counts = dict.fromkeys(STATES, 0)
    for row in servers.order_by().values("state").annotate(n=Count("pk")):
        counts[row["state"]] = row["n"]
    return counts


def filter_servers(servers, *, department="", state="", search=""):
    if department:
        servers = servers.filter(department=department)
    if state in STATES:
        servers = servers.filter(state=state)
    if search:
        servers = servers.filter(
            Q(hostname__icontains=search) | Q(school__icontains=search) | Q(name__icontains=search)
        )
    return servers


def departments() -> list[str]:
    return list(
        SchoolServer.objects.exclude(department="")
        .order_by("department")
        .values_list("department", flat=True)
        .distinct()
    )


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

UNKNOWN_VERSION = _("unknown version")


def builds_by_vhash(vhashes) -> dict:
    """{vhash: build} of the builds whose contents hash is one of `vhashes` (laptops report
    it in lower case), in one query. A vhash it leaves out is an unknown version
    (UNKNOWN_VERSION): a build the portal does not have, or whose hash nobody entered yet."""
    wanted = {vhash.lower() for vhash in vhashes if vhash}
    if not wanted:
        return {}
    builds = Build.objects.annotate(vhash=Lower("contents_hash")).filter(vhash__in=wanted)
    return {build.vhash: build for build in builds}
