"""The releases part of `/metrics` (registered by `apps.ReleasesConfig.ready`), read from
the database at each scrape in a fixed number of queries.

Task durations come from the audit trail, not from the workers' memory: each worker process
would only know its own tasks. A validation lasts from its claim (the audit row that put the
build in `validating`) to `validated_at`; a publication from its claim to `published_at`.
"""

from datetime import timedelta

from django.db.models import Count, Max, OuterRef, Subquery
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .audit import AuditAction
from .models import AuditEvent, Build, BuildStatus, Deployment, DeploymentStatus

# Durations are summarised over the tasks that ended in this window.
DURATION_WINDOW = timedelta(days=30)
QUANTILES = (0.5, 0.9, 1.0)


def _claimed_at(status):
    return Subquery(
        AuditEvent.objects.filter(build=OuterRef("pk"), action=AuditAction.STATUS, to_status=status)
        .values("build")
        .annotate(last=Max("at"))
        .values("last")[:1]
    )


def _durations(ended_field, claim_status, since) -> list[float]:
    rows = (
        Build.objects.filter(**{f"{ended_field}__gte": since})
        .annotate(claimed=_claimed_at(claim_status))
        .values_list("claimed", ended_field)
    )
    return sorted((ended - claimed).total_seconds() for claimed, ended in rows if claimed and ended)


def _quantile(values, q):
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def collect():
    builds = GaugeMetricFamily("xo_builds", "Builds in each state.", labels=["state"])
    counts = dict(Build.objects.order_by().values_list("status").annotate(n=Count("pk")))
    for status in BuildStatus:
        builds.add_metric([status.value], counts.get(status.value, 0))
    yield builds

    failed = CounterMetricFamily(
        "xo_deployments_failed", "Deployments of updates.cfg that failed (rolled back)."
    )
    failed.add_metric(
        [],
        Deployment.objects.filter(
            status=DeploymentStatus.FAILED, coalesced_into__isnull=True
        ).count(),
    )
    yield failed

    since = timezone.now() - DURATION_WINDOW
    durations = GaugeMetricFamily(
        "xo_task_duration_seconds",
        "How long validations and publications took, over those that ended in the last "
        "30 days (from the audit trail).",
        labels=["task", "quantile"],
    )
    runs = GaugeMetricFamily(
        "xo_task_runs",
        "Validations and publications that ended in the last 30 days.",
        labels=["task"],
    )
    for task, ended, claim in (
        ("validate_build", "validated_at", BuildStatus.VALIDATING),
        ("publish_build", "published_at", BuildStatus.PUBLISHING),
    ):
        values = _durations(ended, claim, since)
        runs.add_metric([task], len(values))
        for q in QUANTILES if values else ():
            durations.add_metric([task, str(q)], _quantile(values, q))
    yield durations
    yield runs
