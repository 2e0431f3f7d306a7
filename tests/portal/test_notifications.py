"""`portal.notifications.notify`: once per event and user, only to those who can and want
to get it, in the deployment's language, and a failed send leaves it to be sent again."""

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.utils.translation import gettext_lazy as _

from portal import notifications
from portal.models import NotificationKind, NotificationOptOut, SentNotification

KIND = NotificationKind.DEPLOYMENT_FAILED


class BrokenBackend(BaseEmailBackend):
    """A mail server that refuses everything."""

    def send_messages(self, messages):
        raise ConnectionRefusedError("no mail server")


def message():
    return notifications.Message(
        _("Deployment #%(pk)s of updates.cfg failed"),
        "notifications/deployment_failed.txt",
        {"pk": 7, "deployment": None, "link": notifications.absolute_url("/deployments/7/")},
    )


@pytest.fixture
def people(cast):
    for user in (cast.alice, cast.carol, cast.dave, cast.root):
        user.email = f"{user.username}@example.org"
        user.save(update_fields=["email"])
    return cast


def send(users, key="deployment:7"):
    return notifications.notify(kind=KIND, key=key, users=users, message=message())


def test_it_sends_each_user_one_mail_per_event(people):
    assert send([people.carol, people.root]) == 2
    assert send([people.carol, people.root]) == 0

    assert sorted(m.to[0] for m in mail.outbox) == ["carol@example.org", "root@example.org"]
    assert SentNotification.objects.filter(kind=KIND, key="deployment:7").count() == 2


def test_another_event_of_the_same_kind_is_sent_again(people):
    send([people.carol])
    assert send([people.carol], key="deployment:8") == 1
    assert len(mail.outbox) == 2


def test_it_skips_users_who_turned_the_kind_off(people):
    NotificationOptOut.objects.create(user=people.carol, kind=KIND)
    assert send([people.carol, people.root]) == 1
    assert [m.to for m in mail.outbox] == [["root@example.org"]]


def test_it_skips_users_without_an_address_or_inactive(people):
    people.root.is_active = False
    people.root.save(update_fields=["is_active"])
    assert send([people.eve, people.root]) == 0
    assert mail.outbox == []
    assert not SentNotification.objects.exists()


def test_the_mail_is_in_the_deployments_language_with_an_absolute_link(people, settings):
    settings.LANGUAGE_CODE = "en"
    settings.PORTAL_BASE_URL = "https://portal.example.org"
    send([people.carol])
    sent = mail.outbox[0]
    assert sent.subject == "[XO] Deployment #7 of updates.cfg failed"
    assert "https://portal.example.org/deployments/7/" in sent.body
    assert "https://portal.example.org/profile/" in sent.body
    assert "&" not in sent.body  # plain text, nothing HTML-escaped


def test_a_failed_send_is_given_back_for_the_retry(people, settings):
    settings.EMAIL_BACKEND = "tests.portal.test_notifications.BrokenBackend"
    with pytest.raises(notifications.NotificationsFailed):  # said after the others went
        send([people.carol])
    assert not SentNotification.objects.exists()

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert send([people.carol]) == 1


def test_users_with_role_counts_superusers_and_needs_an_address(people):
    approvers = notifications.users_with_role("approvers")
    assert [u.username for u in approvers] == ["carol", "root"]


def test_each_role_is_offered_its_own_kinds(people):
    assert notifications.kinds_for(people.dave) == [NotificationKind.SERVERS_DIGEST]
    assert NotificationKind.BUILD_INVALID in notifications.kinds_for(people.alice)
    assert NotificationKind.WAITING_PROMOTION not in notifications.kinds_for(people.alice)
    assert notifications.kinds_for(people.eve) == []
    assert notifications.kinds_for(people.root) == list(NotificationKind)
