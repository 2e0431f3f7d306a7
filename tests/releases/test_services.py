import hashlib
import os
import tarfile
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone, translation

from releases import services, tasks
from releases.models import AuditEvent, Build, BuildManifest, BuildStatus, HashSource
from releases.reasons import Refused

from ..factories import compress, stage, tar_bytes, write_build
from ..manifest import read_manifest


@pytest.fixture
def upload(cast, tmp_path):
    """Stage a build's three files as the upload handler would and hand them over."""

    def _upload(
        name="py801-2", *, compression="bz2", user=None, build_name="", contents_hash="", **files
    ):
        paths = write_build(tmp_path / "in" / name, name, compression=compression, **files)
        staged = [stage(path, settings.UPLOAD_TEMP_DIR) for path in paths]
        return services.build_create(
            acting_user=user or cast.alice,
            tarball=staged[0],
            md5_file=staged[1],
            contents=staged[2],
            name=build_name,
            contents_hash=contents_hash,
        )

    return _upload


def published_files():
    folder = settings.PUPPETCONTENT_OS_DIR
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_it_stores_an_uploaded_build_and_records_who_uploaded_it(upload, cast):
    build = upload()
    assert build.status == BuildStatus.UPLOADED
    assert build.name == "py801-2"
    assert build.uploaded_by == cast.alice
    assert build.stored_tarball.read_bytes()[:3] == b"BZh"
    event = AuditEvent.objects.get(build=build)
    assert (event.actor, event.action, event.to_status) == (cast.alice, "upload", "uploaded")


def test_it_uses_the_name_given_instead_of_the_archive_prefix(upload):
    build = upload(build_name="py801-2b")
    assert build.name == "py801-2b"
    assert build.tarball_name == "py801-2b-tree.tar.bz2"


def test_it_refuses_a_reused_name_even_in_another_case_and_stores_nothing(upload):
    upload()
    with pytest.raises(Refused) as caught:
        upload(build_name="PY801-2")
    assert caught.value.code == "name_taken"
    assert Build.objects.count() == 1
    assert len(os.listdir(settings.BUILD_STORE_DIR)) == 1


@pytest.mark.parametrize("name", ["../etc", ".hidden", "has space", "ñandú", "x" * 65, "-dash"])
def test_it_refuses_a_malformed_name(upload, name):
    with pytest.raises(Refused) as caught:
        upload(build_name=name)
    assert caught.value.code == "name_invalid"
    assert not Build.objects.exists()


def test_it_refuses_an_md5_file_that_does_not_match_the_upload(upload):
    with pytest.raises(Refused) as caught:
        upload(md5_text=f"{'0' * 32}  py801-2-tree.tar.bz2\n")
    assert caught.value.code == "md5_mismatch"
    assert not Build.objects.exists()
    assert not settings.BUILD_STORE_DIR.exists() or not os.listdir(settings.BUILD_STORE_DIR)


def test_it_accepts_a_bare_md5_with_a_note(upload):
    data = compress(tar_bytes({"a": b"a"}), "bz2")
    build = upload(tarball=data, md5_text=hashlib.md5(data).hexdigest() + "\n")
    assert build.md5_file_bare
    assert build.events.filter(code="md5_bare").exists()


def test_it_validates_and_publishes_a_good_build(upload):
    build = upload(contents_hash="abcdef0123456789")
    assert services.build_validate(build_id=build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.VALID, build.status_detail
    assert build.pristine_id == "21021"
    assert build.contents_hash == "abcdef0123456789"
    assert build.contents_hash_source == HashSource.ENTERED
    assert BuildManifest.objects.get(build=build).entries == build.member_count

    assert services.build_publish(build_id=build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.PUBLISHED, build.status_detail
    assert build.published_at is not None
    assert published_files() == [
        "py801-2-tree.tar.bz2",
        "py801-2-tree.tar.bz2.md5",
        "py801-2.contents",
        "py801-2.name",
    ]
    assert [(e.from_status, e.to_status) for e in build.events.exclude(to_status="")] == [
        ("", "uploaded"),
        ("uploaded", "validating"),
        ("validating", "valid"),
        ("valid", "publishing"),
        ("publishing", "published"),
    ]


def test_it_does_nothing_when_a_validation_message_is_delivered_twice(upload):
    build = upload()
    assert services.build_validate(build_id=build.pk)
    assert not services.build_validate(build_id=build.pk)
    assert build.events.filter(to_status="validating").count() == 1


def test_it_marks_a_truncated_archive_invalid_and_publishes_nothing(upload):
    data = compress(tar_bytes({"big": os.urandom(200_000)}), "xz")
    build = upload(compression="xz", tarball=data[: len(data) // 2])
    services.build_validate(build_id=build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.INVALID
    # xz says so first; tar then only meets the end of its input.
    assert build.status_code == "archive_decompress_failed"
    with translation.override("en"):
        assert "xz cannot decompress the archive" in build.status_detail
        assert "Unexpected end of input" in build.status_detail
    assert not services.build_publish(build_id=build.pk)
    assert published_files() == []
    # Invalid builds keep their files for inspection.
    assert build.stored_tarball.exists()


def test_it_marks_a_build_with_two_pristine_trees_invalid(upload):
    info = tarfile.TarInfo("versions/pristine/99999/etc/issue")
    info.size = 2
    data = compress(tar_bytes({"etc/issue": b"x\n"}, extra=[(info, b"y\n")]), "bz2")
    build = upload(tarball=data)
    services.build_validate(build_id=build.pk)
    build.refresh_from_db()
    assert (build.status, build.status_code) == (BuildStatus.INVALID, "archive_several_pristine")


def test_it_marks_non_json_contents_invalid(upload):
    build = upload(contents=b"not json at all")
    services.build_validate(build_id=build.pk)
    build.refresh_from_db()
    assert (build.status, build.status_code) == (BuildStatus.INVALID, "contents_not_json")


def test_it_computes_the_contents_hash_with_the_configured_command(upload, settings):
    settings.CONTENTS_HASH_COMMAND = ["sh", "-c", 'sha1sum "$1" | cut -c1-40', "sh", "{path}"]
    build = upload()
    services.build_validate(build_id=build.pk)
    build.refresh_from_db()
    expected = hashlib.sha1(build.stored_contents.read_bytes()).hexdigest()
    assert (build.contents_hash, build.contents_hash_source) == (expected, HashSource.COMMAND)


def test_it_refuses_an_entered_hash_that_the_command_contradicts(upload, settings):
    settings.CONTENTS_HASH_COMMAND = ["sh", "-c", "echo computedhash1", "sh", "{path}"]
    build = upload(contents_hash="enteredhash1")
    services.build_validate(build_id=build.pk)
    build.refresh_from_db()
    assert (build.status, build.status_code) == (BuildStatus.INVALID, "hash_mismatch")


def test_it_keeps_a_build_valid_when_the_hash_command_cannot_run(upload, settings):
    settings.CONTENTS_HASH_COMMAND = ["/nonexistent/bitfrost-hash", "{path}"]
    build = upload()
    services.build_validate(build_id=build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.VALID
    assert build.contents_hash == ""
    assert build.events.filter(code="hash_command_unavailable").exists()


def test_it_lets_staff_enter_the_hash_later(upload, cast):
    build = upload()
    services.build_set_contents_hash(build=build, acting_user=cast.carol, value=" abc12345def ")
    build.refresh_from_db()
    assert (build.contents_hash, build.contents_hash_source) == ("abc12345def", "entered")
    assert build.events.filter(action="contents_hash", actor=cast.carol).exists()


def test_it_refuses_a_malformed_hash(upload, cast):
    build = upload()
    with pytest.raises(Refused) as caught:
        services.build_set_contents_hash(build=build, acting_user=cast.carol, value="a]b\nc")
    assert caught.value.code == "hash_invalid"


def test_it_marks_publication_failed_on_a_conflicting_file_and_allows_a_retry(upload, cast):
    build = upload()
    services.build_validate(build_id=build.pk)
    settings.PUPPETCONTENT_OS_DIR.mkdir(parents=True)
    (settings.PUPPETCONTENT_OS_DIR / "py801-2.contents").write_text("someone else's")
    services.build_publish(build_id=build.pk)
    build.refresh_from_db()
    assert (build.status, build.status_code) == (BuildStatus.PUBLISH_FAILED, "publish_conflict")
    assert published_files() == ["py801-2.contents"]

    (settings.PUPPETCONTENT_OS_DIR / "py801-2.contents").unlink()
    assert services.build_retry_publication(build=build, acting_user=cast.alice)
    services.build_publish(build_id=build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.PUBLISHED


def test_the_sweeper_requeues_a_build_whose_worker_died(upload, settings):
    build = upload()
    Build.objects.filter(pk=build.pk).update(
        status=BuildStatus.VALIDATING,
        attempts=1,
        progress_at=timezone.now() - timezone.timedelta(seconds=settings.SWEEPER_STALE_AFTER + 1),
    )
    counts = tasks.sweep()
    build.refresh_from_db()
    assert counts["validate"] == 1
    assert build.status == BuildStatus.UPLOADED
    assert services.build_validate(build_id=build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.VALID


def test_the_sweeper_gives_up_after_the_attempt_cap(upload, settings):
    build = upload()
    Build.objects.filter(pk=build.pk).update(
        status=BuildStatus.VALIDATING,
        attempts=settings.SWEEPER_MAX_ATTEMPTS,
        progress_at=timezone.now() - timezone.timedelta(seconds=settings.SWEEPER_STALE_AFTER + 1),
    )
    tasks.sweep()
    build.refresh_from_db()
    assert (build.status, build.status_code) == (BuildStatus.INVALID, "validation_abandoned")


def test_the_sweeper_leaves_builds_that_are_making_progress_alone(upload):
    build = upload()
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.VALIDATING)
    assert tasks.sweep() == {
        "validate": 0,
        "publish": 0,
        "abandoned": 0,
        "deploy": 0,
        "recall": 0,
        "abandoned_uploads": 0,
        "expired_resumable_uploads": 0,
        "validation_scratch": 0,
    }


def test_the_sweeper_removes_uploads_a_killed_web_process_left_behind(settings, db):
    folder = Path(settings.UPLOAD_TEMP_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    old, live, other = folder / ".upload-old", folder / ".upload-live", folder / "keep.txt"
    for path in (old, live, other):
        path.write_bytes(b"x")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    os.utime(other, (hours_ago, hours_ago))
    assert tasks.sweep()["abandoned_uploads"] == 1
    assert not old.exists()
    assert live.exists() and other.exists()  # still being written; not ours


def test_a_missing_tar_on_the_validation_host_hands_the_build_back(upload, settings):
    """The host's fault, not the build's: it waits in `uploaded` for the retry."""
    settings.SCHOOL_SERVER_TAR = "/nonexistent/tar"
    build = upload()

    with pytest.raises(OSError, match="/nonexistent/tar is not installed"):
        services.build_validate(build_id=build.pk)

    build.refresh_from_db()
    assert build.status == BuildStatus.UPLOADED
    assert "/nonexistent/tar is not installed" in build.events.order_by("-id")[0].params["error"]


def test_a_disk_error_while_validating_hands_the_build_back_audited(upload, monkeypatch):
    """Not the build's fault: it goes back to `uploaded` for the task's retry, and its
    history says why. (EIO from the disk cannot be caused for real here: injected at the
    read of the archive.)"""
    import errno

    build = upload()

    def failing_disk(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(services.unpack, "unpack_archive", failing_disk)
    with pytest.raises(OSError):
        services.build_validate(build_id=build.pk)

    build.refresh_from_db()
    assert build.status == BuildStatus.UPLOADED
    last = build.events.order_by("-id").first()
    assert (last.from_status, last.to_status) == ("validating", "uploaded")
    assert last.code == "interrupted"
    assert "Input/output error" in last.params["error"]


def test_a_pristine_id_that_is_not_utf8_is_stored_escaped_and_the_build_is_valid(upload):
    """GNU tar takes any bytes as a name; the database takes text. The id and the summary
    say `\\xff`, the manifest keeps the name exactly. (It once crashed the task and left the
    build `validating` with no reason.)"""
    tarball = compress(tar_bytes({"etc/issue": b"hi\n"}, pristine="id\udcff"), "bz2")
    build = upload(tarball=tarball)

    services.build_validate(build_id=build.pk)

    build.refresh_from_db()
    assert (build.status, build.pristine_id) == (BuildStatus.VALID, "id\\xff")
    assert build.archive_summary["served"] == "versions/pristine/id\\xff"
    paths = [entry.path for entry in read_manifest(build.manifest.data)]
    assert "versions/pristine/id\udcff/etc/issue" in paths


def test_a_fault_of_the_portal_while_validating_ends_in_a_state_with_its_reason(
    upload, monkeypatch
):
    build = upload()

    def broken(*args, **kwargs):
        raise KeyError("served")

    monkeypatch.setattr(services.unpack, "unpack_archive", broken)
    services.build_validate(build_id=build.pk)

    build.refresh_from_db()
    assert (build.status, build.status_code) == (BuildStatus.INVALID, "validation_error")
    assert build.status_params == {"error": "KeyError: 'served'"}
