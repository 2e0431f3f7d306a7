"""School servers in the Django admin: an edit, an addition and a new report token each go
through schools.services and leave one audit event saying who did what."""

import pytest
from django.test import Client
from django.utils import translation

from releases import reasons
from releases.audit import AuditAction
from releases.models import AuditEvent
from schools.models import SchoolServer
from tests.factories import english_client

LIST_URL = "/admin/schools/schoolserver/"
ADD_URL = "/admin/schools/schoolserver/add/"


def change_url(server):
    return f"/admin/schools/schoolserver/{server.pk}/change/"


@pytest.fixture
def xs(db):
    return SchoolServer.objects.create(
        hostname="xs-caacupe-1.local",
        name="xs1",
        school="Escuela 1",
        department="Cordillera",
        address="10.1.2.3",
    )


def login(user):
    client = english_client()
    client.force_login(user)
    return client


def form(server, **changes):
    """The change form as the admin page would post it, with `changes`; an unticked
    checkbox is not sent at all."""
    data = {
        "name": server.name,
        "hostname": server.hostname,
        "school": server.school,
        "department": server.department,
        "contact": server.contact,
        "notes": server.notes,
        "address": server.address or "",
        "active": "on" if server.active else None,
        **changes,
    }
    return {key: value for key, value in data.items() if value is not None}


def server_events():
    return list(AuditEvent.objects.filter(action=AuditAction.SERVER_EDIT))


def test_it_audits_switching_a_server_off_with_who_and_old_and_new(cast, xs):
    response = login(cast.root).post(change_url(xs), form(xs, active=None))
    assert response.status_code == 302, response.content.decode()[:2000]
    xs.refresh_from_db()
    assert xs.active is False
    [event] = server_events()
    assert (event.actor, event.build, event.code) == (cast.root, None, "server_edited")
    assert event.params == {"server": "xs-caacupe-1.local", "changes": {"active": [True, False]}}
    with translation.override("en"):
        assert reasons.render(event.code, event.params) == (
            "School server xs-caacupe-1.local changed: active: yes → no."
        )
    with translation.override("es"):
        assert reasons.render(event.code, event.params) == (
            "Servidor escolar xs-caacupe-1.local modificado: activo: sí → no."
        )


def test_it_audits_every_field_that_changed_in_one_event(cast, xs):
    response = login(cast.root).post(
        change_url(xs), form(xs, school="Escuela Uno", address="", hostname="XS-Caacupe-1.local")
    )
    assert response.status_code == 302
    [event] = server_events()
    assert event.params["changes"] == {
        "school": ["Escuela 1", "Escuela Uno"],
        "address": ["10.1.2.3", None],
    }
    with translation.override("en"):
        assert reasons.render(event.code, event.params) == (
            "School server xs-caacupe-1.local changed: school: “Escuela 1” → “Escuela Uno”; "
            "IP address: “10.1.2.3” → (empty)."
        )
    xs.refresh_from_db()
    assert (xs.school, xs.address, xs.hostname) == ("Escuela Uno", None, "xs-caacupe-1.local")


def test_saving_the_form_unchanged_writes_no_event(cast, xs):
    response = login(cast.root).post(change_url(xs), form(xs))
    assert response.status_code == 302
    assert server_events() == []


def test_adding_a_server_is_audited(cast):
    new = SchoolServer(hostname="xs-luque-1.local", name="xs-luque", school="Escuela 5")
    response = login(cast.root).post(ADD_URL, form(new, active=None))
    assert response.status_code == 302
    server = SchoolServer.objects.get()
    assert (server.hostname, server.active) == ("xs-luque-1.local", False)
    [event] = server_events()
    assert (event.actor, event.code) == (cast.root, "server_added_inactive")
    assert event.params == {"server": "xs-luque-1.local", "active": False}


def test_a_new_token_from_the_admin_is_audited_without_the_token(cast, xs):
    response = login(cast.root).post(
        LIST_URL, {"action": "new_token", "_selected_action": [xs.pk]}, follow=True
    )
    assert response.status_code == 200
    xs.refresh_from_db()
    [event] = AuditEvent.objects.filter(action=AuditAction.TOKEN_ROTATION)
    assert (event.actor, event.code) == (cast.root, "server_token_rotated")
    assert event.params == {"server": "xs-caacupe-1.local", "prefix": xs.token_prefix}


@pytest.mark.parametrize("actor", ["dave", "alice", "carol", "eve"])
def test_only_staff_reach_the_change_form(cast, xs, actor):
    response = login(getattr(cast, actor)).post(change_url(xs), form(xs, active=None))
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    xs.refresh_from_db()
    assert xs.active is True
    assert server_events() == []


def test_anonymous_is_sent_to_log_in(xs):
    response = Client().post(change_url(xs), form(xs, active=None))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")  # ours, which shadows the admin's
    assert SchoolServer.objects.get().active is True
