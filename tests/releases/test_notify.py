"""Build and deployment e-mails (`releases.notify`): the right people, once per event,
after commit, caught up by the sweep when the message was lost, opt-outs honoured."""

import smtplib
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.utils import timezone

from portal import notifications
from portal.celery import app as celery_app
from portal.models import NotificationKind, NotificationOptOut, SentNotification
from releases import deploy, notify, offers, services, tasks
from releases.models import Build, BuildStatus, DeploymentStatus
from schools.models import SchoolServer, SyncState

from ..factories import make_user, stage, write_build


@pytest.fixture
def people(cast):
    """The cast, each with an address but eve (who holds no role anyway)."""
    for user in (cast.alice, cast.bob, cast.carol, cast.dave, cast.root):
        user.email = f"{user.username}@example.org"
        user.save(update_fields=["email"])
    return cast


@pytest.fixture
def eager(monkeypatch):
    """Tasks run where they are sent, so an on-commit `.delay()` sends its mail here."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)


def recipients(kind=None) -> list[str]:
    sent = SentNotification.objects.all()
    if kind is not None:
        sent = sent.filter(kind=kind)
    return sorted(sent.values_list("user__username", flat=True))


def outbox_to() -> list[str]:
    return sorted(address.split("@")[0] for message in mail.outbox for address in message.to)


def upload_invalid(user, tmp_path, name="py300-1"):
    paths = write_build(tmp_path / "in" / name, name, contents=b"not json at all")
    staged = [stage(path, django_settings.UPLOAD_TEMP_DIR) for path in paths]
    return services.build_create(
        acting_user=user, tarball=staged[0], md5_file=staged[1], contents=staged[2]
    )


def test_it_tells_the_uploader_once_their_build_is_invalid_after_commit(
    people, tmp_path, eager, django_capture_on_commit_callbacks
):
    build = upload_invalid(people.bob, tmp_path)
    with django_capture_on_commit_callbacks(execute=True):
        services.build_validate(build_id=build.pk)

    assert Build.objects.get(pk=build.pk).status == BuildStatus.INVALID
    assert outbox_to() == ["bob"]
    assert build.name in mail.outbox[0].subject
    assert f"/builds/{build.name}/" in mail.outbox[0].body
    # A redelivered task, a second worker, the sweep: nothing more.
    assert tasks.notify_build(build.pk) == 0
    assert notify.sweep()["builds"] == 0
    assert len(mail.outbox) == 1


def test_a_published_build_without_a_hash_concerns_its_uploader_and_the_approvers(people, unhashed):
    build = unhashed(uploader=people.alice)

    assert notify.build_notify(build_id=build.pk) == 3
    assert notify.build_notify(build_id=build.pk) == 0
    # bob uploads too, but this build is not his; dave and eve may not enter hashes.
    assert recipients(NotificationKind.WAITING_HASH) == ["alice", "carol", "root"]
    assert outbox_to() == ["alice", "carol", "root"]


def test_entering_the_hash_tells_the_approvers_it_waits_for_promotion(
    people, unhashed, eager, django_capture_on_commit_callbacks
):
    build = unhashed(uploader=people.alice)
    with django_capture_on_commit_callbacks(execute=True):
        services.build_set_contents_hash(build=build, acting_user=people.alice, value="ab" * 20)

    assert recipients(NotificationKind.WAITING_PROMOTION) == ["carol", "root"]
    assert len(mail.outbox) == 2
    assert "/builds/" in mail.outbox[0].body


def test_the_publication_itself_enqueues_the_mail_after_commit(
    people, published, eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        build = published(uploader=people.alice)

    assert recipients(NotificationKind.WAITING_PROMOTION) == ["carol", "root"]
    assert all(build.name in message.subject for message in mail.outbox)


def test_nothing_is_mailed_before_the_transaction_commits(
    people, unhashed, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        unhashed(uploader=people.alice)
    assert callbacks  # the mail waits for the commit (and then for a worker)
    assert mail.outbox == []


def test_an_approver_who_turned_it_off_is_not_told(people, published):
    NotificationOptOut.objects.create(user=people.carol, kind=NotificationKind.WAITING_PROMOTION)
    build = published(uploader=people.alice)

    notify.build_notify(build_id=build.pk)

    assert outbox_to() == ["root"]


def test_the_sweep_sends_what_a_lost_message_never_did_and_only_once(people, published):
    """The fixture's on-commit callbacks never run: as if the broker had been down."""
    build = published(uploader=people.alice)

    assert notify.sweep()["builds"] == 2
    assert notify.sweep()["builds"] == 0
    assert recipients() == ["carol", "root"]
    assert build.name in mail.outbox[0].subject


def test_the_sweep_leaves_old_events_alone(people, published):
    build = published(uploader=people.alice)
    Build.objects.filter(pk=build.pk).update(
        published_at=timezone.now() - notify.CATCH_UP - timedelta(hours=1)
    )
    assert notify.sweep()["builds"] == 0
    assert mail.outbox == []


def test_a_build_that_would_break_school_servers_invites_nobody(people, published):
    build = published(uploader=people.alice)
    Build.objects.filter(pk=build.pk).update(recheck_code="archive_several_pristine")
    assert notify.build_notify(build_id=build.pk) == 0


# --- Coverage ------------------------------------------------------------------------------


def servers_holding(build, *, holding: int, total: int):
    now = timezone.now()
    servers = SchoolServer.objects.bulk_create(
        SchoolServer(hostname=f"xs-{i}.local", school=f"Escuela {i}", last_report_at=now)
        for i in range(total)
    )
    SyncState.objects.bulk_create(
        SyncState(server=s, build=build, build_name=build.name, status="present", held_since=now)
        for s in servers[:holding]
    )


def test_the_approvers_hear_once_when_coverage_reaches_the_minimum(
    people, published, settings, django_assert_max_num_queries
):
    settings.PROMOTION_MIN_COVERAGE = 0.75
    build = published(uploader=people.alice)
    servers_holding(build, holding=2, total=4)
    assert notify.coverage_notify() == 0

    server = SchoolServer.objects.exclude(syncs__build=build).first()
    SyncState.objects.create(server=server, build=build, build_name=build.name, status="verified")
    # 8 to find who is due (none per server or build; one for the newest offered build) and
    # 3 per mail (savepoint, claim, release): two approvers.
    with django_assert_max_num_queries(14):
        assert notify.coverage_notify() == 2

    assert notify.coverage_notify() == 0
    assert recipients(NotificationKind.COVERAGE_REACHED) == ["carol", "root"]
    assert "75" in mail.outbox[0].subject


def test_an_offered_build_is_past_the_coverage_news(people, published, settings):
    settings.PROMOTION_MIN_COVERAGE = 0.5
    build = published(uploader=people.alice)
    servers_holding(build, holding=2, total=2)
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.OFFERED)
    assert notify.coverage_notify() == 0


def test_a_build_older_than_the_offered_one_is_not_suggested(people, published, settings):
    """It was passed over on purpose: promoting it would roll the laptops back."""
    settings.PROMOTION_MIN_COVERAGE = 0.5
    older = published(uploader=people.alice)
    offered = published(uploader=people.alice)
    Build.objects.filter(pk=offered.pk).update(status=BuildStatus.OFFERED)
    servers_holding(older, holding=2, total=2)

    assert notify.coverage_notify() == 0
    newer = published(uploader=people.alice)
    SyncState.objects.bulk_create(
        SyncState(server=server, build=newer, build_name=newer.name, status="verified")
        for server in SchoolServer.objects.all()
    )
    assert notify.coverage_notify() == 2


# --- One mail that cannot go ---------------------------------------------------------------


def failing_for(address, error):
    real = notifications.send_mail

    def send(subject, body, sender, recipients, **kwargs):
        if address in recipients:
            raise error
        return real(subject, body, sender, recipients, **kwargs)

    return send


def test_a_refused_address_does_not_keep_the_others_from_their_mail(people, unhashed, monkeypatch):
    refused = smtplib.SMTPRecipientsRefused({"carol@example.org": (550, b"no such user")})
    monkeypatch.setattr(notifications, "send_mail", failing_for("carol@example.org", refused))
    build = unhashed(uploader=people.alice)

    assert notify.build_notify(build_id=build.pk) == 2

    assert outbox_to() == ["alice", "root"]
    # Refused for good: not tried again (its claim is kept).
    assert recipients(NotificationKind.WAITING_HASH) == ["alice", "carol", "root"]


def test_a_mail_that_fails_is_given_back_and_the_others_still_go(people, unhashed, monkeypatch):
    down = ConnectionRefusedError(111, "Connection refused")
    monkeypatch.setattr(notifications, "send_mail", failing_for("carol@example.org", down))
    build = unhashed(uploader=people.alice)

    with pytest.raises(notifications.NotificationsFailed):
        notify.build_notify(build_id=build.pk)

    assert outbox_to() == ["alice", "root"]
    assert recipients(NotificationKind.WAITING_HASH) == ["alice", "root"]
    monkeypatch.undo()
    assert notify.sweep()["builds"] == 1  # carol's, once the server is back
    assert recipients(NotificationKind.WAITING_HASH) == ["alice", "carol", "root"]


def test_the_sweep_goes_on_past_an_event_whose_mail_cannot_be_made(people, unhashed, monkeypatch):
    first, second = unhashed("py501-1"), unhashed("py502-1")
    real = notify.build_notify

    def broken_for_first(*, build_id):
        if build_id == first.pk:
            raise ValueError("a template error")
        return real(build_id=build_id)

    monkeypatch.setattr(notify, "build_notify", broken_for_first)
    SentNotification.objects.all().delete()
    mail.outbox.clear()

    assert notify.sweep()["builds"] == 3  # the second build's three people
    assert {message.subject for message in mail.outbox} == {
        message.subject for message in mail.outbox if second.name in message.subject
    }


# --- Deployments ---------------------------------------------------------------------------


def test_a_failed_deployment_is_mailed_to_the_approvers_once(
    people, published, settings, django_capture_on_commit_callbacks
):
    build = published(uploader=people.alice)
    offers.build_promote(build=build, acting_user=people.carol, priority="normal", reason="ok")
    settings.OATSLITE_RESTART_COMMAND = ["sh", "-c", "exit 3"]
    with django_capture_on_commit_callbacks(execute=True):
        deployment = deploy.apply_deployments()

    assert deployment.status == DeploymentStatus.FAILED
    assert recipients(NotificationKind.DEPLOYMENT_FAILED) == ["carol", "root"]
    assert f"#{deployment.pk}" in mail.outbox[0].subject
    assert f"/deployments/{deployment.pk}/" in mail.outbox[0].body
    assert notify.deployment_notify(deployment_id=deployment.pk) == 0
    assert notify.sweep()["deployments"] == 0


def test_the_emergency_stop_is_mailed_once_even_if_the_first_try_was_lost(
    people, published, django_capture_on_commit_callbacks
):
    offers.build_promote(
        build=published(uploader=people.alice),
        acting_user=people.carol,
        priority="normal",
        reason="ok",
    )
    with django_capture_on_commit_callbacks():  # the web request's callbacks are lost
        deployment = offers.offers_stop_all(acting_user=people.carol, reason="bad build")

    assert notify.sweep()["deployments"] == 2
    assert notify.deployment_notify(deployment_id=deployment.pk) == 0
    assert recipients(NotificationKind.EMERGENCY_STOP) == ["carol", "root"]
    assert "carol" in mail.outbox[0].subject
    assert "bad build" in mail.outbox[0].body


def test_the_sweep_catches_an_invalid_build_whose_message_was_lost(people, tmp_path):
    build = upload_invalid(people.bob, tmp_path, name="py300-2")
    services.build_validate(build_id=build.pk)  # its on-commit callbacks never run

    assert notify.sweep()["builds"] == 1
    assert notify.sweep()["builds"] == 0
    assert outbox_to() == ["bob"]


def test_every_beat_entry_names_a_registered_task():
    celery_app.loader.import_default_modules()
    for entry in django_settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in celery_app.tasks, entry["task"]


@pytest.mark.worker
def test_a_real_worker_mails_the_uploader_of_an_invalid_build_once(start_worker, tmp_path):
    """Through the broker: the validation's commit enqueues the mail on the default queue.
    The worker prints mail (console backend); what it sent is in SentNotification."""
    start_worker(DJANGO_EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend")
    uploader = make_user("worker-notify-uploader", "uploaders")
    uploader.email = "uploader@example.org"
    uploader.save(update_fields=["email"])
    build = upload_invalid(uploader, tmp_path, name=f"e2e-{uuid.uuid4().hex[:10]}")

    deadline = time.monotonic() + 90
    while not SentNotification.objects.filter(key=f"build:{build.pk}").exists():
        assert time.monotonic() < deadline, "no mail was sent"
        time.sleep(0.2)
    assert Build.objects.get(pk=build.pk).status == BuildStatus.INVALID
    assert recipients(NotificationKind.BUILD_INVALID) == ["worker-notify-uploader"]
    assert notify.sweep()["builds"] == 0
