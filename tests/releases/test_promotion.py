"""Promotion, withdrawal, the emergency stop, rollback and applying updates.cfg, against the
real database and real files. The oatslite restart and health check are the process edge:
small shell commands that record what they saw."""

import threading

import pytest
from django.conf import settings
from django.core import mail
from django.db import IntegrityError, connection, transaction

from releases import deploy, offers
from releases.models import (
    Build,
    BuildStatus,
    Deployment,
    DeploymentAction,
    DeploymentStatus,
    OfferedEntry,
)
from releases.reasons import Refused

from ..factories import make_user

HAND_WRITTEN = "# global settings\n\n[legacy0001]\nname = py700-1\npriority = normal\n"


def restart_recorder(tmp_path, *, fail_if_contains=None):
    """A restart command that appends the file it finds to a log, and fails when the file
    contains `fail_if_contains`."""
    log = tmp_path / "restarts.log"
    script = 'cat "$1" >> "$2"; echo "--- restart" >> "$2"'
    if fail_if_contains:
        script += f'; ! grep -q "{fail_if_contains}" "$1"'
    return ["sh", "-c", script, "sh", str(settings.OATSLITE_UPDATES_CFG), str(log)], log


def promote(build, user, **kwargs):
    kwargs.setdefault("reason", "coverage is not reported yet")
    return offers.build_promote(build=build, acting_user=user, **kwargs)


# --- Rules --------------------------------------------------------------------------------


def test_an_approver_promotes_a_build_someone_else_uploaded(published, cast, oatslite):
    build = published()
    deployment = promote(build, cast.carol)
    build.refresh_from_db()
    assert build.status == BuildStatus.OFFERED
    entry = OfferedEntry.objects.get(build=build)
    assert (entry.promoted_by, entry.priority, entry.section) == (
        cast.carol,
        "normal",
        build.contents_hash,
    )
    assert deployment.status == DeploymentStatus.PENDING
    deploy.apply_deployments()
    assert oatslite.read_text() == (
        f"[{build.contents_hash}]\nname = {build.name}\npriority = normal\n"
        f"update_path = rsync://schoolserver/build-{build.name}\n"
    )


def test_it_refuses_promotion_by_the_uploader(published, cast):
    uploader_and_approver = make_user("uma", "uploaders", "approvers")
    build = published(uploader=uploader_and_approver)
    with pytest.raises(Refused) as caught:
        promote(build, uploader_and_approver)
    assert caught.value.code == "promote_own_build"
    assert not OfferedEntry.objects.exists()
    assert not Deployment.objects.exists()


def test_it_refuses_promotion_by_a_superuser_who_uploaded_the_build(published, cast):
    build = published(uploader=cast.root)
    with pytest.raises(Refused) as caught:
        promote(build, cast.root)
    assert caught.value.code == "promote_own_build"


def test_self_approval_is_allowed_and_audited_when_the_setting_says_so(published, cast, settings):
    settings.ALLOW_SELF_APPROVAL = True
    build = published(uploader=cast.root)
    promote(build, cast.root)
    assert OfferedEntry.objects.get(build=build).self_approved
    assert build.events.filter(action="self_approval", actor=cast.root).exists()


def test_the_database_refuses_a_self_approved_entry_without_the_flag(published, cast):
    build = published()
    with pytest.raises(IntegrityError), transaction.atomic():
        OfferedEntry.objects.create(
            section="x" * 10,
            build=build,
            position=1,
            promoted_by=cast.alice,
            build_uploader=cast.alice,
        )


def test_it_refuses_a_build_that_is_not_published(cast, published):
    build = published()
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.INVALID)
    with pytest.raises(Refused) as caught:
        promote(build, cast.carol)
    assert caught.value.code == "promote_not_published"


def test_it_refuses_a_build_without_a_contents_hash(cast, published):
    build = published()
    Build.objects.filter(pk=build.pk).update(contents_hash="")
    with pytest.raises(Refused) as caught:
        promote(build, cast.carol)
    assert caught.value.code == "promote_no_hash"


def test_it_refuses_an_unknown_priority(cast, published):
    with pytest.raises(Refused) as caught:
        promote(published(), cast.carol, priority="urgent")
    assert caught.value.code == "promote_priority"


def test_it_asks_for_a_reason_while_coverage_is_unknown(cast, published):
    build = published()
    with pytest.raises(Refused) as caught:
        promote(build, cast.carol, reason="  ")
    assert caught.value.code == "promote_reason_required"
    assert not OfferedEntry.objects.exists()


def test_a_written_reason_overrides_the_coverage_gate_and_is_audited(cast, published):
    build = published()
    promote(build, cast.carol, reason="urgent security fix")
    entry = OfferedEntry.objects.get(build=build)
    assert entry.reason == "urgent security fix"
    event = build.events.get(action="coverage_override")
    assert event.params == {"reason": "urgent security fix"}


def test_it_refuses_a_second_build_with_the_same_contents_hash(cast, published):
    promote(published(contents_hash="samehash01"), cast.carol)
    with pytest.raises(Refused) as caught:
        promote(published(contents_hash="samehash01"), cast.carol)
    assert caught.value.code == "promote_duplicate_hash"


# --- Applying -----------------------------------------------------------------------------


def test_without_a_restart_command_the_restart_is_recorded_as_skipped(cast, published):
    promote(published(), cast.carol)
    deployment = deploy.apply_deployments()
    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert deployment.restart_skipped
    assert deployment.outputs == []


def test_it_restarts_oatslite_after_writing_the_file(cast, published, settings, tmp_path):
    settings.OATSLITE_RESTART_COMMAND, log = restart_recorder(tmp_path)
    build = published()
    promote(build, cast.carol)
    deployment = deploy.apply_deployments()
    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert not deployment.restart_skipped
    assert log.read_text().count("--- restart") == 1
    assert build.name in log.read_text()  # oatslite started on the new file


def test_new_entries_go_below_older_ones(cast, published, oatslite):
    first, second = published("py100-1"), published("py100-2")
    promote(first, cast.carol)
    deploy.apply_deployments()
    promote(second, cast.carol)
    deploy.apply_deployments()
    text = oatslite.read_text()
    assert text.index("py100-1") < text.index("py100-2")


def test_a_hanging_restart_counts_as_failed(cast, published, settings, oatslite):
    settings.OATSLITE_RESTART_COMMAND = ["sleep", "30"]
    settings.OATSLITE_COMMAND_TIMEOUT = 1
    promote(published(), cast.carol)
    deployment = deploy.apply_deployments()
    assert deployment.status == DeploymentStatus.FAILED
    assert "1 seconds" in deployment.outputs[0]["problem"]
    assert not oatslite.exists()  # there was no file before: there is none after


def test_a_failing_health_check_restores_the_previous_file(cast, published, settings, oatslite):
    settings.OATSLITE_RESTART_COMMAND = ["true"]
    settings.OATSLITE_HEALTHCHECK_COMMAND = ["sh", "-c", "echo oatslite is down >&2; exit 3"]
    promote(published(), cast.carol)
    deployment = deploy.apply_deployments()
    assert deployment.status == DeploymentStatus.FAILED
    assert deployment.outputs[1]["stderr"] == "oatslite is down\n"
    assert not oatslite.exists()


@pytest.mark.parametrize("failure", ["restart fails", "restart hangs", "health check fails"])
def test_a_failed_deployment_restores_the_file_restarts_on_it_and_tells_the_approvers(
    failure, cast, published, settings, tmp_path, oatslite, django_capture_on_commit_callbacks
):
    good, bad = published("py210-1"), published("py210-2")
    promote(good, cast.carol)
    deploy.apply_deployments()
    before = oatslite.read_text()
    fails = "py210-2" if failure == "restart fails" else None
    restart, log = restart_recorder(tmp_path, fail_if_contains=fails)
    cfg = str(settings.OATSLITE_UPDATES_CFG)
    if failure == "restart hangs":
        # Records the file it found, then hangs while that file offers py210-2.
        restart[2] += '; if grep -q py210-2 "$1"; then sleep 30; fi'
        settings.OATSLITE_COMMAND_TIMEOUT = 3
    elif failure == "health check fails":
        settings.OATSLITE_HEALTHCHECK_COMMAND = ["sh", "-c", '! grep -q py210-2 "$1"', "sh", cfg]
    settings.OATSLITE_RESTART_COMMAND = restart
    cast.carol.email = "carol@example.org"
    cast.carol.save(update_fields=["email"])

    promote(bad, cast.carol)
    with django_capture_on_commit_callbacks(execute=True):
        deployment = deploy.apply_deployments()

    assert deployment.status == DeploymentStatus.FAILED
    assert oatslite.read_text() == before
    restarts = log.read_text().split("--- restart\n")
    assert "py210-2" in restarts[0]
    assert restarts[1] == before  # restarted again, on the restored file
    assert "restart (after restoring)" in [step["step"] for step in deployment.outputs]
    bad.refresh_from_db()
    assert bad.status == BuildStatus.PUBLISHED  # the promotion was undone
    assert not OfferedEntry.objects.filter(build=bad, active=True).exists()
    # In the deployment's language (Spanish here), so the number, not the words.
    assert len(mail.outbox) == 1 and f"#{deployment.pk}" in mail.outbox[0].subject


def test_it_stops_when_the_file_was_edited_by_hand(cast, published, oatslite):
    promote(published(), cast.carol)
    deploy.apply_deployments()
    oatslite.write_text(oatslite.read_text() + "\n[handmade]\nname = x\n")
    edited = oatslite.read_text()
    build = published()
    promote(build, cast.carol)
    deployment = deploy.apply_deployments()
    assert deployment.status == DeploymentStatus.DRIFT
    assert "+[handmade]" in deployment.diff
    assert oatslite.read_text() == edited  # nothing written


def test_an_existing_file_must_be_imported_or_overwritten_before_the_first_deployment(
    cast, published, oatslite
):
    oatslite.parent.mkdir(parents=True)
    oatslite.write_text(HAND_WRITTEN)
    promote(published(), cast.carol)
    assert deploy.apply_deployments().status == DeploymentStatus.DRIFT
    offers.overwrite_drift(acting_user=cast.carol)
    deployment = deploy.apply_deployments()
    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert "legacy0001" not in oatslite.read_text()


def test_importing_a_hand_written_file_keeps_every_entry_and_renders_it_unchanged(
    cast, published, oatslite
):
    oatslite.parent.mkdir(parents=True)
    oatslite.write_text(HAND_WRITTEN)
    offers.updates_cfg_import(text=HAND_WRITTEN, acting_user=cast.carol)
    assert deploy.render_current() == HAND_WRITTEN
    assert OfferedEntry.objects.get().legacy

    build = published()
    promote(build, cast.carol)
    deployment = deploy.apply_deployments()
    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert oatslite.read_text().startswith(HAND_WRITTEN + "\n[")


def test_a_promotion_stopped_by_a_hand_edit_survives_the_import_of_the_hand_edits(
    cast, published, oatslite
):
    first, second = published(), published()
    promote(first, cast.carol)
    deploy.apply_deployments()
    oatslite.write_text(oatslite.read_text() + "\n[handmade]\nname = x\npriority = normal\n")
    promote(second, cast.carol)
    assert deploy.apply_deployments().status == DeploymentStatus.DRIFT

    imported = offers.updates_cfg_import(text=oatslite.read_text(), acting_user=cast.carol)

    second.refresh_from_db()
    assert second.status == BuildStatus.OFFERED
    assert second.events.filter(action="note", code="kept_over_import").exists()
    reapply = Deployment.objects.get(action=DeploymentAction.REAPPLY)
    assert reapply.status == DeploymentStatus.PENDING and second.name in reapply.reason
    assert imported.status == DeploymentStatus.SUCCEEDED
    assert deploy.apply_deployments().status == DeploymentStatus.SUCCEEDED
    text = oatslite.read_text()
    assert "[handmade]" in text and f"name = {first.name}" in text
    # Below everything else, as a new promotion.
    assert text.index("[handmade]") < text.index(f"name = {second.name}")
    assert text.index(f"name = {first.name}") < text.index(f"name = {second.name}")


def test_a_withdrawal_stopped_by_a_hand_edit_survives_the_import_of_the_hand_edits(
    cast, published, oatslite
):
    build = published()
    promote(build, cast.carol)
    deploy.apply_deployments()
    oatslite.write_text(oatslite.read_text() + "\n[handmade]\nname = x\npriority = normal\n")
    offers.build_withdraw(build=build, acting_user=cast.carol)
    assert deploy.apply_deployments().status == DeploymentStatus.DRIFT

    offers.updates_cfg_import(text=oatslite.read_text(), acting_user=cast.carol)

    build.refresh_from_db()
    assert build.status == BuildStatus.WITHDRAWN
    assert deploy.apply_deployments().status == DeploymentStatus.SUCCEEDED
    assert "[handmade]" in oatslite.read_text()
    assert build.name not in oatslite.read_text()


def test_an_import_with_nothing_pending_queues_nothing(cast, published, oatslite):
    promote(published(), cast.carol)
    deploy.apply_deployments()
    offers.updates_cfg_import(text=oatslite.read_text(), acting_user=cast.carol)
    assert not Deployment.objects.filter(status=DeploymentStatus.PENDING).exists()


def test_an_imported_entry_for_a_known_build_marks_it_offered(cast, published):
    build = published("py700-1")
    offers.updates_cfg_import(text=HAND_WRITTEN, acting_user=cast.carol)
    build.refresh_from_db()
    assert build.status == BuildStatus.OFFERED
    assert not OfferedEntry.objects.get().legacy


def test_withdrawing_removes_the_entry(cast, published, oatslite):
    build = published()
    promote(build, cast.carol)
    deploy.apply_deployments()
    offers.build_withdraw(build=build, acting_user=cast.carol)
    assert deploy.apply_deployments().status == DeploymentStatus.SUCCEEDED
    assert build.name not in oatslite.read_text()
    build.refresh_from_db()
    assert build.status == BuildStatus.WITHDRAWN


def test_the_emergency_stop_offers_nothing_and_mails_the_approvers(
    cast, published, oatslite, django_capture_on_commit_callbacks
):
    cast.carol.email = "carol@example.org"
    cast.carol.save(update_fields=["email"])
    promote(published(), cast.carol)
    promote(published(), cast.carol)
    deploy.apply_deployments()
    with django_capture_on_commit_callbacks() as callbacks:
        offers.offers_stop_all(acting_user=cast.carol, reason="bad build in the field")
    # Run the e-mail, not the broker message (no worker here: the test applies by hand).
    callbacks[-1]()
    assert deploy.apply_deployments().status == DeploymentStatus.SUCCEEDED
    assert oatslite.read_text() == ""
    assert not OfferedEntry.objects.filter(active=True).exists()
    assert any("carol" in message.subject for message in mail.outbox)


def test_rolling_back_reapplies_an_earlier_file(cast, published, oatslite):
    first = published()
    promote(first, cast.carol)
    earlier = deploy.apply_deployments()
    promote(published(), cast.carol)
    deploy.apply_deployments()
    offers.deployment_rollback(deployment=earlier, acting_user=cast.carol)
    assert deploy.apply_deployments().status == DeploymentStatus.SUCCEEDED
    assert oatslite.read_text() == earlier.content


def test_waiting_requests_are_applied_together(cast, published, oatslite):
    one, two = published(), published()
    first = promote(one, cast.carol)
    second = promote(two, cast.carol)
    lead = deploy.apply_deployments()
    assert lead.pk == second.pk
    first.refresh_from_db()
    assert (first.status, first.coalesced_into_id) == (DeploymentStatus.COALESCED, second.pk)
    assert one.name in oatslite.read_text() and two.name in oatslite.read_text()


@pytest.mark.django_db(transaction=True)
def test_two_approvers_promoting_at_once_give_one_file_with_both_in_order(
    cast, published, oatslite
):
    builds = [published(), published(uploader=cast.bob)]
    approvers = [cast.carol, make_user("cecilia", "approvers")]
    barrier = threading.Barrier(2)
    errors = []

    def run(build, approver):
        try:
            barrier.wait()
            promote(build, approver)
            deploy.apply_deployments()
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=pair) for pair in zip(builds, approvers, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    deploy.apply_deployments()
    text = oatslite.read_text()
    names = [entry.name for entry in OfferedEntry.objects.active()]  # promotion order
    assert sorted(names) == sorted(build.name for build in builds)
    assert [text.index(name) for name in names] == sorted(text.index(name) for name in names)
    assert all(build.name in text for build in builds)
    assert text == deploy.render_current()
