"""Which build and deployment events are e-mailed, to whom (`portal.notifications` sends).

- A build turned invalid: its uploader (only they can fix it, by uploading again).
- Published without a contents hash: its uploader and the approvers (who may enter it;
  other uploaders are not told about builds that are not theirs, as on the home page).
- Published with a hash, waiting for promotion: the approvers.
- Published, not offered, and its coverage reached PROMOTION_MIN_COVERAGE: the approvers.
- A deployment of updates.cfg failed; an emergency stop: the approvers.

Every function here re-reads the row and sends only what its state still says, keyed by
the build or deployment, so calling one twice (a redelivered task, the sweep after the
task) sends nothing new. State changes enqueue `build_notify` after commit
(`audit.build_transition`, `services.build_set_contents_hash`); deployments call theirs on
commit; `sweep` (beat) catches what a lost message or a mail server outage left unsent.
"""

import logging
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal import roles
from portal.humanize import percent
from portal.models import NotificationKind
from portal.notifications import Message, absolute_url, already_sent, notify, users_with_role
from schools.selectors import coverage_shares

from .audit import AuditAction
from .models import Build, BuildStatus, Deployment, DeploymentAction, DeploymentStatus

# The sweep looks this far back for events whose mail may have been lost; older events
# are history, not news (and a new install does not mail the whole past).
CATCH_UP = timedelta(days=2)
log = logging.getLogger(__name__)
NOTIFIED_STATUSES = (BuildStatus.INVALID, BuildStatus.PUBLISHED)


def _build_link(build) -> str:
    return absolute_url(reverse("releases:build_detail", args=[build.name]))


def _build_key(build) -> str:
    return f"build:{build.pk}"


def enqueue_build_notify(build_id) -> None:
    """After the caller's transaction commits; robust: a broker outage must not undo the
    change (the sweep mails it later)."""
    from .tasks import notify_build

    transaction.on_commit(lambda: notify_build.delay(build_id), robust=True)


def build_notify(*, build_id) -> int:
    """Mail what the build's current state calls for; returns how many mails went out."""
    build = Build.objects.with_people().filter(pk=build_id).first()
    if build is None:
        return 0
    context = {"name": build.name, "link": _build_link(build), "build": build}
    if build.status == BuildStatus.INVALID:
        return notify(
            kind=NotificationKind.BUILD_INVALID,
            key=_build_key(build),
            users=[build.uploaded_by],
            message=Message(
                _("Build %(name)s is invalid"),
                "notifications/build_invalid.txt",
                context,
            ),
        )
    if build.status != BuildStatus.PUBLISHED or build.recheck_code:
        # Flagged builds would break school servers: nobody is invited to promote them.
        return 0
    if not build.contents_hash:
        users = [build.uploaded_by, *users_with_role(roles.APPROVERS)]
        return notify(
            kind=NotificationKind.WAITING_HASH,
            key=_build_key(build),
            users=users,
            message=Message(
                _("Build %(name)s is published and waits for its contents hash"),
                "notifications/waiting_hash.txt",
                context,
            ),
        )
    return notify(
        kind=NotificationKind.WAITING_PROMOTION,
        key=_build_key(build),
        users=users_with_role(roles.APPROVERS),
        message=Message(
            _("Build %(name)s is published and waits for promotion"),
            "notifications/waiting_promotion.txt",
            context,
        ),
    )


def coverage_notify() -> int:
    """Published builds not offered yet whose coverage reached the minimum. A fixed number
    of queries before anything is sent, however many builds and servers there are."""
    waiting = Build.objects.filter(status=BuildStatus.PUBLISHED, recheck_code="")
    # Only builds newer than what the laptops are offered: an older one left unpromoted was
    # passed over on purpose, and "promote it" would roll the laptops back.
    newest = (
        Build.objects.filter(status=BuildStatus.OFFERED, published_at__isnull=False)
        .order_by("-published_at")
        .values_list("published_at", flat=True)
        .first()
    )
    if newest is not None:
        waiting = waiting.filter(published_at__gt=newest)
    waiting = list(waiting)
    done = already_sent(NotificationKind.COVERAGE_REACHED, map(_build_key, waiting))
    waiting = [build for build in waiting if _build_key(build) not in done]
    if not waiting:
        return 0
    shares = coverage_shares([build.pk for build in waiting])
    minimum = settings.PROMOTION_MIN_COVERAGE
    ready = [b for b in waiting if shares.get(b.pk) is not None and shares[b.pk] >= minimum]
    if not ready:
        return 0
    approvers = list(users_with_role(roles.APPROVERS))
    sent = 0
    for build in ready:
        sent += notify(
            kind=NotificationKind.COVERAGE_REACHED,
            key=_build_key(build),
            users=approvers,
            message=Message(
                _("Build %(name)s reached %(coverage)s of the school servers"),
                "notifications/coverage_reached.txt",
                {
                    "name": build.name,
                    "build": build,
                    "coverage": partial(percent, shares[build.pk]),
                    "minimum": partial(percent, minimum),
                    "link": absolute_url(reverse("releases:build_promote", args=[build.name])),
                },
            ),
        )
    return sent


def deployment_notify(*, deployment_id) -> int:
    """A failed deployment (its lead request: the ones applied with it share its outcome),
    or an emergency stop."""
    deployment = Deployment.objects.select_related("requested_by").filter(pk=deployment_id).first()
    if deployment is None:
        return 0
    link = absolute_url(reverse("releases:deployment_detail", args=[deployment.pk]))
    context = {"pk": deployment.pk, "deployment": deployment, "link": link}
    approvers = list(users_with_role(roles.APPROVERS))
    sent = 0
    if deployment.action == DeploymentAction.STOP_ALL:
        who = deployment.requested_by.get_username() if deployment.requested_by else "-"
        sent += notify(
            kind=NotificationKind.EMERGENCY_STOP,
            key=f"deployment:{deployment.pk}",
            users=approvers,
            message=Message(
                _("Emergency stop by %(who)s: nothing is offered to the laptops"),
                "notifications/emergency_stop.txt",
                {**context, "who": who},
            ),
        )
    if deployment.status == DeploymentStatus.FAILED and not deployment.coalesced_into_id:
        sent += notify(
            kind=NotificationKind.DEPLOYMENT_FAILED,
            key=f"deployment:{deployment.pk}",
            users=approvers,
            message=Message(
                _("Deployment #%(pk)s of updates.cfg failed"),
                "notifications/deployment_failed.txt",
                context,
            ),
        )
    return sent


def deployment_notify_on_commit(deployment_id) -> None:
    """Sent by the committing process itself (the worker that applied it, or the web
    request that stopped everything), as the approvers' mail always was; if that fails,
    the sweep sends it later."""
    transaction.on_commit(lambda: deployment_notify(deployment_id=deployment_id), robust=True)


def sweep(*, now=None) -> dict:
    """Send what is still unsent for the events of the last CATCH_UP, and coverage."""
    now = now or timezone.now()
    since = now - CATCH_UP
    builds = (
        Build.objects.filter(
            Q(
                status=BuildStatus.INVALID,
                events__action=AuditAction.STATUS,
                events__to_status=BuildStatus.INVALID,
                events__at__gte=since,
            )
            | Q(status=BuildStatus.PUBLISHED, published_at__gte=since)
            | Q(
                status=BuildStatus.PUBLISHED,
                events__action=AuditAction.CONTENTS_HASH,
                events__at__gte=since,
            )
        )
        .values_list("pk", flat=True)
        .distinct()
    )
    deployments = Deployment.objects.filter(
        Q(status=DeploymentStatus.FAILED, coalesced_into__isnull=True, finished_at__gte=since)
        | Q(action=DeploymentAction.STOP_ALL, requested_at__gte=since)
    ).values_list("pk", flat=True)
    # One event whose mail cannot go (a template error, a refused server) must not keep
    # the others from going: each is tried on its own, and retried at the next sweep.
    return {
        "builds": sum(_isolated(build_notify, build_id=pk) for pk in builds),
        "deployments": sum(_isolated(deployment_notify, deployment_id=pk) for pk in deployments),
        "coverage": _isolated(coverage_notify),
    }


def _isolated(function, **kwargs) -> int:
    try:
        return function(**kwargs)
    except Exception:
        log.exception(
            "notifications: %s(%s) failed; the next sweep tries again", function.__name__, kwargs
        )
        return 0
