"""What needs me: the home page's list of things waiting for the reader's role, each with
the page that resolves it. A fixed number of queries, whatever the number of builds.

Uploaders: their builds that failed (invalid, publication failed) and published builds still
waiting for a contents hash. Approvers: builds waiting for promotion (with their coverage),
builds that would break school servers, offers not in updates.cfg yet, and a failed or
stopped last deployment. Coordinators: school servers silent or lost. Everyone: the last
events.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from portal import roles
from schools.selectors import build_coverage, servers_with_state, state_counts

from . import deploy
from .access import may_approve, may_edit
from .models import AuditEvent, Build, BuildStatus, Deployment, DeploymentStatus

# Failures older than this are history, not something waiting for someone.
RECENT = timedelta(days=30)
# At most this many items per kind (the page links to the full list).
SHOWN = 10
COVERAGE_SHOWN = 5


@dataclass
class Needs:
    failed: list = field(default_factory=list)
    waiting_hash: list = field(default_factory=list)
    waiting_promotion: list = field(default_factory=list)  # (build, coverage)
    flagged: list = field(default_factory=list)
    waiting_offers: str = ""
    deployment: Deployment | None = None
    servers: dict = field(default_factory=dict)  # state → count, silent and lost only
    events: list = field(default_factory=list)

    @property
    def anything(self) -> bool:
        return bool(
            self.failed
            or self.waiting_hash
            or self.waiting_promotion
            or self.flagged
            or self.waiting_offers
            or self.deployment
            or any(self.servers.values())
        )


def needs_for(user, *, now=None) -> Needs:
    now = now or timezone.now()
    needs = Needs()
    builds = Build.objects.with_people().defer("status_params", "archive_summary")
    if may_edit(user):
        mine = builds.filter(uploaded_by=user) if not may_approve(user) else builds
        needs.failed = list(
            mine.filter(
                status__in=[BuildStatus.INVALID, BuildStatus.PUBLISH_FAILED],
                created_at__gte=now - RECENT,
            )[:SHOWN]
        )
        needs.waiting_hash = list(
            mine.filter(status=BuildStatus.PUBLISHED, contents_hash="", recheck_code="")[:SHOWN]
        )
    if may_approve(user):
        ready = builds.filter(status=BuildStatus.PUBLISHED, recheck_code="").exclude(
            contents_hash=""
        )
        needs.waiting_promotion = [
            (build, build_coverage(build, missing_limit=0)) for build in ready[:COVERAGE_SHOWN]
        ]
        needs.flagged = list(
            builds.exclude(recheck_code="").filter(
                Q(status__in=[BuildStatus.PUBLISHED, BuildStatus.OFFERED, BuildStatus.WITHDRAWN])
            )[:SHOWN]
        )
        needs.waiting_offers = deploy.waiting_reason(deploy.undeployed_entry_ids())
        latest = Deployment.objects.order_by("-id").first()
        if latest is not None and latest.status in (
            DeploymentStatus.FAILED,
            DeploymentStatus.DRIFT,
        ):
            needs.deployment = latest
    if roles.has_role(user, roles.COORDINATORS) or may_approve(user):
        counts = state_counts(servers_with_state(now=now))
        needs.servers = {state: counts[state] for state in ("silent", "lost") if counts[state]}
    needs.events = list(
        AuditEvent.objects.select_related("actor", "build").order_by("-at", "-id")[:SHOWN]
    )
    return needs
