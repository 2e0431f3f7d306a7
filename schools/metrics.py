"""The school-server part of `/metrics` (registered by `apps.SchoolsConfig.ready`): servers
by state and how far the newest offered build has spread, a fixed number of queries."""

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from .selectors import (
    STATES,
    build_coverage,
    newest_offered_build,
    servers_with_state,
    state_counts,
)


def collect():
    newest = newest_offered_build()
    counts = state_counts(servers_with_state(now=timezone.now(), newest=newest))
    servers = GaugeMetricFamily(
        "xo_school_servers",
        "School servers in each state (silent and lost: no report for SCHOOL_SILENT_AFTER "
        "and SCHOOL_LOST_AFTER).",
        labels=["state"],
    )
    for state in STATES:
        servers.add_metric([state], counts[state])
    yield servers
    if newest is None:
        return
    coverage = build_coverage(newest, missing_limit=0)
    if coverage.share is not None:
        share = GaugeMetricFamily(
            "xo_newest_offered_build_coverage",
            "Share (0-1) of active school servers holding the newest offered build.",
            labels=["build"],
        )
        share.add_metric([newest.name], coverage.share)
        yield share
