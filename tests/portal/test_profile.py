"""The profile page: each user turns each kind of e-mail of their roles off and on."""

import pytest

from portal.models import NotificationKind, NotificationOptOut

from ..factories import english_client


def login(cast, who):
    client = english_client()
    client.force_login(getattr(cast, who))
    return client


def test_anonymous_visitors_are_sent_to_log_in(db):
    response = english_client().get("/profile/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize(
    ("who", "offered", "not_offered"),
    [
        ("alice", "waiting_hash", "servers_digest"),
        ("carol", "deployment_failed", "build_invalid"),
        ("dave", "servers_digest", "coverage_reached"),
    ],
)
def test_each_role_sees_the_kinds_that_concern_it(cast, who, offered, not_offered):
    body = login(cast, who).get("/profile/").content.decode()
    assert f'name="{offered}"' in body
    assert f'name="{not_offered}"' not in body


def test_a_user_without_a_role_is_told_there_is_nothing_to_choose(cast):
    body = login(cast, "eve").get("/profile/").content.decode()
    assert 'id="no-notifications"' in body
    assert 'id="no-email"' in body


def test_unticking_turns_a_kind_off_and_ticking_turns_it_back_on(cast):
    client = login(cast, "carol")
    response = client.post("/profile/", {"waiting_promotion": "on"})
    assert response.status_code == 302
    off = set(NotificationOptOut.objects.filter(user=cast.carol).values_list("kind", flat=True))
    assert NotificationKind.WAITING_PROMOTION not in off
    assert NotificationKind.DEPLOYMENT_FAILED in off and NotificationKind.COVERAGE_REACHED in off

    client.post("/profile/", dict.fromkeys(("waiting_promotion", "deployment_failed"), "on"))
    off = set(NotificationOptOut.objects.filter(user=cast.carol).values_list("kind", flat=True))
    assert NotificationKind.DEPLOYMENT_FAILED not in off
    assert NotificationKind.COVERAGE_REACHED in off
    body = client.get("/profile/").content.decode()
    assert 'name="deployment_failed" id="id_deployment_failed" checked' in body


def test_the_page_is_linked_from_the_header(cast):
    body = login(cast, "dave").get("/").content.decode()
    assert 'href="/profile/"' in body


def test_it_is_in_spanish_by_default(cast):
    from django.test import Client

    client = Client()
    client.force_login(cast.dave)
    body = client.get("/profile/").content.decode()
    assert "Mis avisos" in body


def test_unticking_every_box_turns_every_kind_off(cast):
    """A form with no box ticked posts no field at all; it still counts."""
    login(cast, "dave").post("/profile/", {})
    assert list(
        NotificationOptOut.objects.filter(user=cast.dave).values_list("kind", flat=True)
    ) == [NotificationKind.SERVERS_DIGEST]
