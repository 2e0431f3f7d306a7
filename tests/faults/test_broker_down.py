"""The broker is down while a build is uploaded and while a school server checks in: both are
accepted and stored, the request returns within a bound, and once the broker is back the
sweeper sends the lost message and a real worker publishes the build. Nothing is lost."""

import contextlib
import json
import socket
import time
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from portal.celery import app as celery_app
from releases import tasks
from releases.models import Build, BuildStatus
from schools import services as school_services
from schools.models import CheckIn, SchoolServer

from ..factories import PASSWORD, make_user, write_build
from .conftest import wait_for

# What one request may cost while the broker is away: the publish retry policy with the
# broker's socket timeouts (see CELERY_BROKER_TRANSPORT_OPTIONS).
REQUEST_BOUND = 15.0


def _reset_producers():
    """Forget the pooled broker connections so the next publish looks up a pool for the
    current conf. (Not closed: kombu keeps pools per URL and hands the same one back.)"""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@contextlib.contextmanager
def broker_outage(kind):
    """While inside, everything this process sends goes to a broker that is not there:
    a Redis port nobody listens on ("refused"), a listener that never answers ("silent"), or
    a filesystem broker folder that is gone ("missing")."""
    conf = celery_app.conf
    saved = conf.broker_write_url, dict(conf.broker_transport_options)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if kind == "silent":
        listener.listen(16)  # the kernel completes connections; nobody ever replies
    else:
        listener.close()
    _reset_producers()
    if kind == "missing":
        gone = f"/nonexistent/broker-{uuid.uuid4().hex}"
        conf.broker_transport_options = {
            **saved[1],
            "data_folder_in": gone,
            "data_folder_out": gone,
        }
    else:
        conf.broker_write_url = f"redis://127.0.0.1:{port}/0"
    try:
        yield
    finally:
        listener.close()
        _reset_producers()
        conf.broker_write_url, conf.broker_transport_options = saved


def outages():
    if celery_app.conf.broker_url.startswith("filesystem://"):
        return ["missing"]
    return ["refused", "silent"]


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def upload(client, folder):
    name = f"outage-{uuid.uuid4().hex[:8]}"
    tarball, md5, contents = write_build(folder, name)
    with open(tarball, "rb") as t, open(md5, "rb") as m, open(contents, "rb") as c:
        data = {"tarball": t, "md5": m, "contents": c}
        return name, client.post(reverse("releases:build_upload"), data)


def check_in(server, token, build_name):
    body = {"hostname": server.hostname, "builds": [{"name": build_name}]}
    return Client().post(
        "/api/schools/checkin/",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


@pytest.mark.worker
@pytest.mark.parametrize("kind", outages())
def test_an_upload_and_a_check_in_during_a_broker_outage_are_kept_and_completed_after_it(
    kind, start_worker, tmp_path, settings
):
    settings.PUPPETCONTENT_OS_DIR = tmp_path / "puppet"
    uploader = make_user(f"up-{uuid.uuid4().hex[:6]}", "uploaders")
    client = Client()
    assert client.login(username=uploader.username, password=PASSWORD)
    server = SchoolServer.objects.create(hostname="xs-outage.local", name="xs-outage")
    token = school_services.server_token_rotate(server=server)

    with broker_outage(kind):
        (name, response), upload_seconds = timed(lambda: upload(client, tmp_path / "in"))
        checkin_response, checkin_seconds = timed(lambda: check_in(server, token, name))

    assert response.status_code == 302, response.content.decode()[:500]
    assert upload_seconds < REQUEST_BOUND
    build = Build.objects.get(name=name)
    assert build.status == BuildStatus.UPLOADED
    assert build.stored_tarball.is_file() and build.stored_contents.is_file()
    assert checkin_response.status_code == 200, checkin_response.content
    assert checkin_seconds < REQUEST_BOUND
    assert CheckIn.objects.filter(server=server).count() == 1

    # The broker is back: a worker, and the sweeper once the upload has waited long enough.
    start_worker(PUPPETCONTENT_OS_DIR=str(settings.PUPPETCONTENT_OS_DIR))
    settings.SWEEPER_STALE_AFTER = 1
    wait_for(
        lambda: (
            Build.objects.get(pk=build.pk).progress_at < timezone.now() - timedelta(seconds=1.2)
        ),
        timeout=10,
        what="the upload counting as stuck",
    )
    assert tasks.sweep()["validate"] == 1
    build = wait_for(
        lambda: (b := Build.objects.get(pk=build.pk)).status == BuildStatus.PUBLISHED and b,
        timeout=90,
        interval=0.2,
        what="publication after the outage",
    )
    assert [e.to_status for e in build.events.exclude(to_status="")] == [
        "uploaded",
        "validating",
        "valid",
        "publishing",
        "published",
    ]
    assert (settings.PUPPETCONTENT_OS_DIR / f"{name}.name").read_text() == f"{name}\n"
    assert CheckIn.objects.filter(server=server).count() == 1


def test_healthz_reports_the_broker_down_during_an_outage(db):
    kind = outages()[0]
    with broker_outage(kind):
        response, seconds = timed(lambda: Client().get("/healthz"))
    assert response.status_code == 503
    assert response.json()["broker"]["ok"] is False
    assert response.json()["database"]["ok"] is True
    assert seconds < REQUEST_BOUND
