"""`/metrics`: refused unless a token or an allowed address is configured and given, and
Prometheus text with what the database and the broker say."""

import ipaddress
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from releases import deploy, offers
from releases.models import Deployment, DeploymentStatus
from schools.models import SchoolServer, SyncState

TOKEN = "a-long-enough-metrics-token-0123456789"


def scrape(client=None, **headers):
    return (client or Client()).get("/metrics", **headers)


def samples(response) -> dict:
    text = response.content.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_it_refuses_everyone_when_nothing_is_configured(cast, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = []
    client = Client()
    client.force_login(cast.root)
    assert scrape().status_code == 403
    assert scrape(client).status_code == 403
    assert scrape(HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_it_wants_the_right_bearer_token(db, settings):
    settings.METRICS_TOKEN = TOKEN
    assert scrape().status_code == 403
    assert scrape(HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 403
    assert scrape(HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 403
    response = scrape(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")


@pytest.mark.parametrize(("network", "status"), [("127.0.0.0/8", 200), ("10.0.0.0/8", 403)])
def test_an_allowed_address_needs_no_token(db, settings, network, status):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = [ipaddress.ip_network(network)]
    assert scrape(REMOTE_ADDR="127.0.0.1").status_code == status


def test_a_forged_client_header_from_afar_does_not_count(db, settings):
    settings.LOGIN_CLIENT_IP_HEADER = "X-Real-IP"
    settings.METRICS_ALLOWED_IPS = [ipaddress.ip_network("10.0.0.0/8")]
    assert scrape(REMOTE_ADDR="192.0.2.7", HTTP_X_REAL_IP="10.1.1.1").status_code == 403
    assert scrape(REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="10.1.1.1").status_code == 200


def test_it_reports_builds_servers_coverage_failures_queues_and_durations(
    cast, published, unhashed, settings
):
    settings.METRICS_TOKEN = TOKEN
    offered, _waiting = published("py400-1"), published("py400-2")
    unhashed("py400-3")
    offers.build_promote(build=offered, acting_user=cast.carol, priority="normal", reason="ok")
    deploy.apply_deployments()
    now = timezone.now()
    fine, _silent, _lost = SchoolServer.objects.bulk_create(
        SchoolServer(hostname=f"xs-{i}.local", last_report_at=now - age)
        for i, age in enumerate([timedelta(0), timedelta(days=2), timedelta(days=9)])
    )
    SyncState.objects.create(server=fine, build=offered, build_name=offered.name, status="present")
    Deployment.objects.create(action="promote", status=DeploymentStatus.FAILED)

    values = samples(scrape(HTTP_AUTHORIZATION=f"Bearer {TOKEN}"))

    assert values[("xo_builds", (("state", "offered"),))] == 1
    assert values[("xo_builds", (("state", "published"),))] == 2
    assert values[("xo_builds", (("state", "invalid"),))] == 0
    assert values[("xo_school_servers", (("state", "silent"),))] == 1
    assert values[("xo_school_servers", (("state", "lost"),))] == 1
    assert values[("xo_school_servers", (("state", "up_to_date"),))] == 1
    assert values[("xo_newest_offered_build_coverage", (("build", "py400-1"),))] == 1 / 3
    assert values[("xo_deployments_failed_total", ())] == 1
    assert values[("xo_broker_up", ())] == 1
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    assert ("xo_queue_length", (("queue", queue),)) in values
    assert values[("xo_task_runs", (("task", "validate_build"),))] == 3
    median = ("xo_task_duration_seconds", (("quantile", "0.5"), ("task", "publish_build")))
    assert values[median] >= 0


def test_the_queue_length_counts_a_waiting_message(db, settings):
    from portal import metrics
    from releases.tasks import notify_build

    before = metrics.queue_lengths()[settings.CELERY_TASK_DEFAULT_QUEUE]
    notify_build.delay(0)  # a harmless message: there is no build 0
    assert metrics.queue_lengths()[settings.CELERY_TASK_DEFAULT_QUEUE] == before + 1
