"""recheck_builds on builds that older checks published, and the approvers' recall.

"Published by older checks" is made the way it happened: a build published normally whose
stored archive is one today's checks refuse (validation before issue 9 let these through),
and whose archive summary is empty, as on every row the migration added the field to.
"""

import io
import tarfile

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import translation

from releases import deploy, offers, recheck, tasks
from releases.models import AuditEvent, Build, BuildStatus, DeploymentStatus
from releases.reasons import Refused

from ..factories import compress, tar_bytes


def hard_link_to_nowhere() -> bytes:
    info = tarfile.TarInfo("versions/pristine/21021/bin/sh")
    info.type = tarfile.LNKTYPE
    info.linkname = "versions/pristine/21021/bin/bash"
    return compress(tar_bytes({"etc/issue": b"OLPC\n"}, extra=[(info, None)]), "bz2")


@pytest.fixture
def old_build(published):
    """A published build as older checks left it: no archive summary recorded."""

    def _old_build(*, breaks=False, **kwargs):
        build = published(**kwargs)
        if breaks:
            build.stored_tarball.write_bytes(hard_link_to_nowhere())
        Build.objects.filter(pk=build.pk).update(archive_summary={})
        build.refresh_from_db()
        return build

    return _old_build


def recheck_command(*args):
    out = io.StringIO()
    try:
        call_command("recheck_builds", *args, stdout=out)
    except SystemExit as exit:
        return exit.code, out.getvalue()
    return 0, out.getvalue()


def published_names():
    return sorted(path.name for path in settings.PUPPETCONTENT_OS_DIR.iterdir())


def test_it_says_ok_and_records_the_archive_summary_of_a_good_old_build(old_build):
    build = old_build()

    status, out = recheck_command()

    assert status == 0
    assert out.splitlines() == [f"{build.name}: OK", "1 checked, 0 would break school servers."]
    build.refresh_from_db()
    assert build.recheck_code == "" and build.rechecked_at is not None
    assert build.archive_summary["served"] == "versions/pristine/21021"


def test_it_flags_a_build_that_would_break_school_servers_and_changes_nothing_else(old_build):
    build = old_build(breaks=True)
    files_before = published_names()

    status, out = recheck_command()

    assert status == 1
    # GNU tar's own words: the school server would fail the same way.
    assert (
        f"{build.name}: FAILS: GNU tar, run as school servers run it, fails on this archive "
        "(exit status 2): “tar: versions/pristine/21021/bin/sh: Cannot hard link to "
        "'versions/pristine/21021/bin/bash': No such file or directory”"
    ) in out
    build.refresh_from_db()
    assert build.status == BuildStatus.PUBLISHED
    assert build.recheck_code == "archive_tar_failed"
    assert published_names() == files_before
    event = AuditEvent.objects.filter(build=build, action="recheck").get()
    assert event.code == "recheck_failed"
    with translation.override("en"):
        assert event.message.startswith("Would break school servers: GNU tar, run as")


def test_it_audits_a_verdict_only_when_it_changes(old_build):
    build = old_build(breaks=True)
    recheck_command()
    recheck_command()
    assert AuditEvent.objects.filter(build=build, action="recheck").count() == 1

    good = tar_bytes({"etc/issue": b"OLPC\n"})
    build.stored_tarball.write_bytes(compress(good, "bz2"))
    recheck_command()

    codes = list(
        AuditEvent.objects.filter(build=build, action="recheck").values_list("code", flat=True)
    )
    assert codes == ["recheck_failed", "recheck_passed"]
    build.refresh_from_db()
    assert build.recheck_code == ""


def test_it_checks_only_the_named_build(old_build):
    flagged = old_build(breaks=True)
    other = old_build()

    status, out = recheck_command("--name", other.name)

    assert (status, out.splitlines()[0]) == (0, f"{other.name}: OK")
    flagged.refresh_from_db()
    assert flagged.rechecked_at is None


def test_it_explains_a_name_it_cannot_check(old_build, cast):
    build = old_build()
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.INVALID)

    with pytest.raises(CommandError, match="No build is named 'nope'"):
        call_command("recheck_builds", "--name", "nope")
    with pytest.raises(CommandError, match="is invalid; only published, offered and withdrawn"):
        call_command("recheck_builds", "--name", build.name)


def test_it_reports_a_stored_archive_that_is_gone(old_build):
    build = old_build()
    build.stored_tarball.unlink()

    status, out = recheck_command()

    assert status == 1
    assert "is missing; upload the build again" in out


# --- Recall ---------------------------------------------------------------------------------


def flagged(old_build, **kwargs):
    build = old_build(breaks=True, **kwargs)
    assert recheck.build_recheck(build=build) is not None
    build.refresh_from_db()
    return build


def test_an_approver_recalls_a_flagged_build_and_its_files_leave_with_name_first(old_build, cast):
    build = flagged(old_build)
    assert f"{build.name}.name" in published_names()

    recheck.build_recall(build=build, acting_user=cast.carol, reason="hard link breaks XS")
    assert recheck.build_remove_files(build_id=build.pk)

    build.refresh_from_db()
    assert build.status == BuildStatus.RETIRED
    assert published_names() == []
    events = AuditEvent.objects.filter(build=build).order_by("pk")
    recall = events.get(action="recall")
    assert (recall.actor, recall.params) == (cast.carol, {"reason": "hard link breaks XS"})
    retired = events.get(to_status=BuildStatus.RETIRED)
    assert retired.params["files"].startswith(f"{build.name}.name, ")


def test_removing_the_files_twice_is_harmless(old_build, cast):
    build = flagged(old_build)
    recheck.build_recall(build=build, acting_user=cast.carol, reason="broken")
    assert recheck.build_remove_files(build_id=build.pk)

    assert not recheck.build_remove_files(build_id=build.pk)


def test_recalling_an_offered_build_withdraws_it_and_no_failed_deployment_brings_it_back(
    old_build, cast, settings, tmp_path
):
    build = old_build(uploader=cast.alice)
    offers.build_promote(build=build, acting_user=cast.carol, reason="pilot")
    deploy.apply_deployments()
    build.stored_tarball.write_bytes(hard_link_to_nowhere())
    recheck.build_recheck(build=build)
    build.refresh_from_db()
    assert build.status == BuildStatus.OFFERED

    recheck.build_recall(build=build, acting_user=cast.carol, reason="breaks every XS")
    build.refresh_from_db()
    assert build.status == BuildStatus.WITHDRAWN
    assert recheck.build_remove_files(build_id=build.pk)
    # oatslite fails to restart: the withdrawal is undone, the old updates.cfg restored.
    settings.OATSLITE_RESTART_COMMAND = ["sh", "-c", "exit 3"]
    deployment = deploy.apply_deployments()

    assert deployment.status == DeploymentStatus.FAILED
    build.refresh_from_db()
    assert build.status == BuildStatus.RETIRED


@pytest.mark.parametrize(
    ("prepare", "reason", "code"),
    [
        ("unflagged", "why", "recall_not_flagged"),
        ("flagged", "  ", "recall_reason_required"),
        ("retired", "why", "recall_not_published"),
    ],
)
def test_it_refuses_a_recall_with_a_specific_reason(old_build, cast, prepare, reason, code):
    build = old_build() if prepare == "unflagged" else flagged(old_build)
    if prepare == "retired":
        Build.objects.filter(pk=build.pk).update(status=BuildStatus.RETIRED)

    with pytest.raises(Refused) as caught:
        recheck.build_recall(build=build, acting_user=cast.carol, reason=reason)

    assert caught.value.code == code
    assert published_names() != []


def test_the_sweeper_sends_a_lost_removal_again(
    old_build, cast, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    build = flagged(old_build)
    recheck.build_recall(build=build, acting_user=cast.carol, reason="broken")
    later = timezone.now() + timedelta(seconds=settings.SWEEPER_STALE_AFTER + 5)

    with django_capture_on_commit_callbacks() as callbacks:
        counts = tasks.sweep(now=later)

    assert counts["recall"] == 1
    assert callbacks


# --- The build page and its access matrix ---------------------------------------------------


def recall_url(build):
    return reverse("releases:build_recall", args=[build.name])


def client_for(user):
    client = Client()
    if user is not None:
        client.force_login(user)
    client.cookies["django_language"] = "en"
    return client


def test_the_build_page_flags_the_build_and_offers_the_recall_to_approvers(old_build, cast):
    build = flagged(old_build)
    page = reverse("releases:build_detail", args=[build.name])

    approver = client_for(cast.carol).get(page).content.decode()
    coordinator = client_for(cast.dave).get(page).content.decode()
    listing = client_for(cast.dave).get(reverse("releases:build_list")).content.decode()

    assert 'id="recheck-flag"' in approver and 'id="recall-button"' in approver
    assert "Would break school servers" in coordinator and "recall-button" not in coordinator
    assert "would break school servers" in listing


@pytest.mark.parametrize(
    ("who", "expected"), [("carol", 302), ("alice", 403), ("dave", 403), (None, 302)]
)
def test_the_recall_view_walks_the_access_matrix(old_build, cast, who, expected):
    build = flagged(old_build)
    user = getattr(cast, who) if who else None

    response = client_for(user).post(recall_url(build), {"reason": "breaks every XS"})

    assert response.status_code == expected
    build.refresh_from_db()
    recalled = AuditEvent.objects.filter(build=build, action="recall").exists()
    assert recalled == (who == "carol")
    if who is None:
        assert "/login/" in response["Location"]


def test_the_recall_view_shows_a_refusal_as_a_message(old_build, cast):
    build = flagged(old_build)

    response = client_for(cast.carol).post(recall_url(build), {"reason": ""}, follow=True)

    assert "Write why the build is being taken away" in response.content.decode()
    assert not AuditEvent.objects.filter(build=build, action="recall").exists()


def test_a_flagged_build_cannot_be_promoted_and_the_page_offers_no_promotion(old_build, cast):
    build = flagged(old_build)

    with pytest.raises(Refused) as caught:
        offers.build_promote(build=build, acting_user=cast.carol, reason="pilot")

    assert caught.value.code == "promote_flagged"
    page = client_for(cast.carol).get(reverse("releases:build_detail", args=[build.name]))
    assert 'id="promote-link"' not in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_it_runs_on_a_database_whose_builds_were_published_before_the_archive_checks(
    published,
):
    """Real rows from before migration 0003: the schema is taken back to 0002 with the builds
    in it, brought forward again (as an upgrade does), then the command reads them."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    good = published()
    bad = published()
    bad.stored_tarball.write_bytes(hard_link_to_nowhere())
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes("releases")
    try:
        executor = MigrationExecutor(connection)
        executor.migrate([("releases", "0002_promotion")])
        with connection.cursor() as cursor:
            columns = {
                c.name
                for c in connection.introspection.get_table_description(
                    cursor, Build._meta.db_table
                )
            }
        assert "archive_summary" not in columns
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(latest)

    assert Build.objects.get(pk=good.pk).archive_summary == {}
    status, out = recheck_command()
    assert status == 1
    assert f"{good.name}: OK" in out
    assert bad.name in out and "hard link" in out.lower()
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.archive_summary and good.recheck_code == ""
    assert bad.recheck_code and bad.status == BuildStatus.PUBLISHED
