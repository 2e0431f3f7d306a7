import json

import pytest
from django.test import Client

from schools import services
from schools.models import CheckIn, SchoolServer, SyncState, SyncStatus

URL = "/api/schools/checkin/"


@pytest.fixture
def server(db):
    return SchoolServer.objects.create(
        hostname="xs-caacupe-1.local",
        name="xs-caacupe-1",
        school="Escuela 1",
        department="Cordillera",
    )


@pytest.fixture
def token(server):
    return services.server_token_rotate(server=server)


def post(body, token=None, *, content_type="application/json", raw=None):
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else json.dumps(body)
    return client.post(URL, data, content_type=content_type, **headers)


def report(**extra):
    return {"hostname": "xs-caacupe-1.local", "builds": [], **extra}


def test_it_records_a_report(server, token, published):
    build = published("py801-2")
    response = post(
        report(
            builds=[{"name": "py801-2", "md5": build.md5, "verified": True}],
            clock="2026-11-26T03:00:00Z",
            last_refresh_status=0,
            disk_free_bytes=123456789,
            client_version="1",
        ),
        token,
    )
    assert response.status_code == 200, response.content
    state = SyncState.objects.get(server=server)
    assert (state.build, state.status) == (build, SyncStatus.VERIFIED)
    server.refresh_from_db()
    assert server.disk_free_bytes == 123456789
    assert server.last_report_at is not None
    assert server.last_error == ""


def test_an_unknown_build_is_recorded_as_such(server, token):
    assert post(report(builds=[{"name": "py999-9"}]), token).status_code == 200
    state = SyncState.objects.get()
    assert (state.build, state.build_name, state.status) == (None, "py999-9", SyncStatus.PRESENT)


def test_a_wrong_md5_marks_the_build_failed_with_the_reason(server, token, published):
    build = published("py801-3")
    post(report(builds=[{"name": build.name, "md5": "0" * 32, "verified": True}]), token)
    assert SyncState.objects.get().status == SyncStatus.FAILED
    server.refresh_from_db()
    assert "differs from the published" in server.last_error


def test_repeating_a_report_is_idempotent(server, token):
    body = report(builds=[{"name": "py1"}, {"name": "py2", "verified": False}])
    post(body, token)
    states = list(SyncState.objects.values_list("build_name", "status", "first_seen_at"))
    post(body, token)
    assert list(SyncState.objects.values_list("build_name", "status", "first_seen_at")) == states


def test_a_build_no_longer_listed_goes_back_to_unknown(server, token):
    post(report(builds=[{"name": "py1"}]), token)
    post(report(builds=[]), token)
    assert SyncState.objects.get().status == SyncStatus.UNKNOWN


def test_the_history_is_bounded(server, token, settings):
    for _ in range(services.CHECKIN_HISTORY + 5):
        post(report(), token)
    assert CheckIn.objects.filter(server=server).count() == services.CHECKIN_HISTORY


def test_a_missing_token_is_refused(server):
    response = post(report())
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert not CheckIn.objects.exists()


def test_a_wrong_token_is_refused(server, token):
    assert post(report(), "not-the-token").status_code == 401
    assert not CheckIn.objects.exists()


def test_a_rotated_token_stops_working(server, token):
    services.server_token_rotate(server=server)
    assert post(report(), token).status_code == 401


def test_an_inactive_server_is_refused(server, token):
    SchoolServer.objects.filter(pk=server.pk).update(active=False)
    response = post(report(), token)
    assert response.status_code == 403
    assert not CheckIn.objects.exists()


def test_a_token_cannot_report_for_another_server(server, token):
    SchoolServer.objects.create(hostname="xs-other.local", name="o", school="Otra")
    response = post({"hostname": "xs-other.local", "builds": []}, token)
    assert response.status_code == 403
    assert "xs-caacupe-1.local" in response.json()["error"]
    assert not CheckIn.objects.exists()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"builds": []}', "hostname"),
        ('{"hostname": "xs-caacupe-1.local"}', "builds"),
        ('{"hostname": "xs-caacupe-1.local", "builds": "py1"}', "builds"),
        ('{"hostname": "xs-caacupe-1.local", "builds": [{"name": "../etc"}]}', "name"),
        ('{"hostname": "xs-caacupe-1.local", "builds": [{"name": "a", "md5": "xyz"}]}', "md5"),
        (
            '{"hostname": "xs-caacupe-1.local", "builds": [{"name": "a", "verified": "yes"}]}',
            "verified",
        ),
        ('{"hostname": "xs-caacupe-1.local", "builds": [{"name": "a"}, {"name": "a"}]}', "twice"),
        ('{"hostname": "xs-caacupe-1.local", "builds": [], "extra": 1}', "unknown fields"),
        ('{"hostname": "xs-caacupe-1.local", "builds": [], "clock": "yesterday"}', "clock"),
        (
            '{"hostname": "xs-caacupe-1.local", "builds": [], "clock": "2026-11-26T03:00:00"}',
            "time zone",
        ),
        (
            '{"hostname": "xs-caacupe-1.local", "builds": [], "disk_free_bytes": -1}',
            "disk_free_bytes",
        ),
        (
            '{"hostname": "xs-caacupe-1.local", "builds": [], "last_refresh_status": true}',
            "last_refresh_status",
        ),
    ],
)
def test_a_malformed_body_is_refused_and_nothing_is_stored(server, token, raw, fragment):
    response = post(None, token, raw=raw)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert not CheckIn.objects.exists()
    assert not SyncState.objects.exists()
    server.refresh_from_db()
    assert server.last_report_at is None


def test_a_wrong_content_type_is_refused(server, token):
    response = post(None, token, raw="hostname=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_a_huge_body_is_refused(server, token):
    response = post(None, token, raw=json.dumps(report(client_version="x" * 300_000)))
    assert response.status_code == 413
    assert not CheckIn.objects.exists()


def test_only_post_is_allowed(server, token):
    assert Client().get(URL, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 405


def test_a_failed_build_the_server_removed_is_unknown_again(server, token, published):
    build = published("py801-9")
    post(report(builds=[{"name": build.name, "md5": "0" * 32}]), token)
    assert SyncState.objects.get().status == SyncStatus.FAILED
    post(report(builds=[]), token)
    assert SyncState.objects.get().status == SyncStatus.UNKNOWN


def test_a_host_name_saved_in_capitals_can_still_report(db):
    server = SchoolServer.objects.create(hostname="XS-Caacupe-9.LOCAL", name="x", school="E")
    key = services.server_token_rotate(server=server)
    assert post({"hostname": "xs-caacupe-9.local", "builds": []}, key).status_code == 200
