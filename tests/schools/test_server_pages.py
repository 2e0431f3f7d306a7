"""Coordinators add and edit school servers and issue their report tokens in the console,
through schools.services, audited; nobody else can."""

import pytest
from django.urls import reverse

from releases.audit import AuditAction
from releases.models import AuditEvent
from schools.models import SchoolServer
from tests.factories import english_client

from .test_admin import form


@pytest.fixture
def xs(db):
    return SchoolServer.objects.create(
        hostname="xs-caacupe-1.local", name="xs1", school="Escuela 1", address="10.1.2.3"
    )


def login(user):
    client = english_client()
    client.force_login(user)
    return client


def test_a_coordinator_adds_a_server_and_it_is_audited(cast):
    client = login(cast.dave)

    response = client.post(
        reverse("schools:server_add"),
        {"hostname": " XS-Luque-2.local ", "school": "Escuela 2", "active": "on"},
    )

    server = SchoolServer.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("schools:server_detail", args=["xs-luque-2.local"])
    assert server.hostname == "xs-luque-2.local"
    assert server.name == "xs-luque-2"  # the host name's first label
    assert server.active
    event = AuditEvent.objects.get(action=AuditAction.SERVER_EDIT)
    assert (event.actor, event.code) == (cast.dave, "server_added")


@pytest.mark.parametrize(
    ("data", "field", "said"),
    [
        ({"hostname": "xs_bad!", "school": "E"}, "hostname", "is not a host name"),
        ({"hostname": "xs-caacupe-1.local", "school": "E"}, "hostname", "Another school server"),
        ({"hostname": "xs-2.local", "school": ""}, "school", "This field is required."),
        ({"hostname": "xs-2.local", "school": "E", "address": "10.1"}, "address", "IPv4 or IPv6"),
    ],
)
def test_a_bad_server_is_refused_with_a_reason_and_changes_nothing(cast, xs, data, field, said):
    response = login(cast.dave).post(reverse("schools:server_add"), data)

    assert response.status_code == 200
    assert any(said in message for message in response.context["form"].errors[field])
    assert SchoolServer.objects.count() == 1
    assert not AuditEvent.objects.exists()


def test_a_coordinator_edits_a_server_and_the_audit_says_old_and_new(cast, xs):
    client = login(cast.dave)
    url = reverse("schools:server_edit", args=[xs.hostname])
    assert client.get(url).status_code == 200

    response = client.post(url, form(xs, active=None, hostname="xs-caacupe-9.local"))

    assert response["Location"] == reverse("schools:server_detail", args=["xs-caacupe-9.local"])
    xs.refresh_from_db()
    assert (xs.hostname, xs.active) == ("xs-caacupe-9.local", False)
    event = AuditEvent.objects.get(action=AuditAction.SERVER_EDIT)
    assert event.actor == cast.dave
    assert event.params["changes"] == {
        "hostname": ["xs-caacupe-1.local", "xs-caacupe-9.local"],
        "active": [True, False],
    }


def test_saving_a_server_unchanged_writes_nothing(cast, xs):
    response = login(cast.dave).post(
        reverse("schools:server_edit", args=[xs.hostname]), form(xs), follow=True
    )
    assert "Nothing changed." in response.content.decode()
    assert not AuditEvent.objects.exists()


def test_a_token_is_shown_once_and_the_old_one_stops_working(cast, xs):
    client = login(cast.dave)
    url = reverse("schools:server_token", args=[xs.hostname])

    first = client.post(url)
    second = client.post(url)

    assert first["Cache-Control"] == second["Cache-Control"] == "no-store"
    old, new = first.context["token"], second.context["token"]
    assert f"PORTAL_TOKEN={new}" in second.content.decode()
    assert "PORTAL_URL=http://testserver\n" in second.content.decode()
    assert 'id="token-replaced"' in second.content.decode()
    assert SchoolServer.objects.by_token(old) is None
    assert SchoolServer.objects.by_token(new) == xs
    page = client.get(reverse("schools:server_detail", args=[xs.hostname])).content.decode()
    assert new not in page and new[:8] in page
    events = AuditEvent.objects.filter(code="server_token_rotated")
    assert [event.actor for event in events] == [cast.dave, cast.dave]
    assert all(new not in str(event.params) for event in events)


@pytest.mark.parametrize("who", ["alice", "carol", "eve"])
def test_only_coordinators_manage_servers(cast, xs, who):
    client = login(getattr(cast, who))
    urls = [
        ("get", reverse("schools:server_add")),
        ("get", reverse("schools:server_edit", args=[xs.hostname])),
        ("post", reverse("schools:server_token", args=[xs.hostname])),
    ]
    for method, url in urls:
        assert getattr(client, method)(url).status_code == 403
    page = client.get(reverse("schools:server_detail", args=[xs.hostname])).content.decode()
    assert 'id="server-token-button"' not in page and 'id="server-edit-link"' not in page
    xs.refresh_from_db()
    assert not xs.token_hash
    assert not AuditEvent.objects.exists()


def test_a_coordinator_sees_the_buttons(cast, xs):
    client = login(cast.dave)
    page = client.get(reverse("schools:server_detail", args=[xs.hostname])).content.decode()
    assert 'id="server-token-button"' in page and 'id="server-edit-link"' in page
    overview = client.get(reverse("schools:overview")).content.decode()
    assert 'id="server-add-link"' in overview


def test_replacing_a_token_asks_first_and_the_question_changes_nothing(cast, xs):
    client = login(cast.dave)
    url = reverse("schools:server_token", args=[xs.hostname])
    client.post(url)
    xs.refresh_from_db()
    issued = xs.token_hash

    response = client.get(url)

    assert response.status_code == 200
    assert 'id="token-replace"' in response.content.decode()
    assert "stops working at once" in response.content.decode()
    xs.refresh_from_db()
    assert xs.token_hash == issued
    assert AuditEvent.objects.filter(code="server_token_rotated").count() == 1
    detail = client.get(reverse("schools:server_detail", args=[xs.hostname])).content.decode()
    assert f'href="{url}"' in detail  # the replace button leads to the question, not a POST
