"""The coordinators' daily digest of silent and lost school servers (`schools.notify`)."""

from datetime import datetime, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from portal.models import NotificationKind, NotificationOptOut
from schools import notify
from schools.models import SchoolServer


@pytest.fixture
def people(cast):
    for user in (cast.alice, cast.carol, cast.dave, cast.root):
        user.email = f"{user.username}@example.org"
        user.save(update_fields=["email"])
    return cast


def local(day, hour):
    return timezone.make_aware(datetime(2026, 12, day, hour, 5))


def servers(now):
    SchoolServer.objects.bulk_create(
        [
            SchoolServer(hostname="xs-fine.local", school="Escuela 1", last_report_at=now),
            SchoolServer(
                hostname="xs-quiet.local",
                school="Escuela 2",
                department="Cordillera",
                last_report_at=now - timedelta(days=2),
            ),
            SchoolServer(
                hostname="xs-gone.local", school="Escuela 3", last_report_at=now - timedelta(days=9)
            ),
        ]
    )


def test_the_coordinators_get_one_digest_a_day(people, settings):
    settings.NOTIFY_DIGEST_HOUR = 7
    settings.LANGUAGE_CODE = "en"
    now = local(4, 8)
    servers(now)

    assert notify.servers_digest(now=now) == 2
    assert notify.servers_digest(now=now + timedelta(hours=3)) == 0

    assert sorted(m.to[0] for m in mail.outbox) == ["dave@example.org", "root@example.org"]
    body = mail.outbox[0].body
    assert mail.outbox[0].subject == "[XO] School servers not reporting: 1 silent, 1 lost"
    assert "xs-quiet.local" in body and "xs-gone.local" in body
    assert "xs-fine.local" not in body
    assert "/schools/?state=lost" in body
    # The next day, a new digest.
    assert notify.servers_digest(now=now + timedelta(days=1)) == 2


def test_nothing_is_sent_before_the_hour(people, settings):
    settings.NOTIFY_DIGEST_HOUR = 7
    now = local(4, 6)
    servers(now)
    assert notify.servers_digest(now=now) == 0
    assert mail.outbox == []


def test_nothing_is_sent_when_every_server_reports(people, django_assert_max_num_queries):
    now = local(4, 9)
    SchoolServer.objects.create(hostname="xs-fine.local", last_report_at=now)
    with django_assert_max_num_queries(4):
        assert notify.servers_digest(now=now) == 0
    assert mail.outbox == []


def test_a_coordinator_who_turned_it_off_gets_nothing(people):
    NotificationOptOut.objects.create(user=people.dave, kind=NotificationKind.SERVERS_DIGEST)
    now = local(4, 9)
    servers(now)
    assert notify.servers_digest(now=now) == 1
    assert [m.to for m in mail.outbox] == [["root@example.org"]]


def test_the_digest_lists_a_fixed_number_of_servers(people, settings, monkeypatch):
    monkeypatch.setattr(notify, "LISTED", 1)
    settings.LANGUAGE_CODE = "en"
    now = local(4, 9)
    servers(now)
    notify.servers_digest(now=now)
    body = mail.outbox[0].body
    assert ("xs-gone.local" in body) != ("xs-quiet.local" in body)
    assert "and 1 more" in body
