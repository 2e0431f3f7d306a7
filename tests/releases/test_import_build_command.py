"""`manage.py import_build`: a build already on the mothership's disk, imported from the shell."""

import io
import os
import re
import shutil
import uuid

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import translation

from releases.models import Build, BuildStatus

from ..factories import make_user, write_build


def run(*args):
    """Run the command; return what it printed on (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("import_build", *[str(arg) for arg in args], stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def listing(folder):
    return sorted(os.listdir(folder)) if folder.exists() else []


def assert_nothing_stored():
    assert not Build.objects.exists()
    assert listing(settings.BUILD_STORE_DIR) == []
    assert listing(settings.UPLOAD_TEMP_DIR) == []


@pytest.fixture
def files(tmp_path):
    """py801-2's three files as the image builder leaves them on disk."""
    return write_build(tmp_path / "in", "py801-2")


def test_it_imports_a_build_and_finds_its_md5_and_contents_beside_the_archive(db, files):
    tarball, _md5, _contents = files
    out, _err = run(tarball)
    build = Build.objects.get()
    assert build.name == "py801-2"
    assert build.status == BuildStatus.UPLOADED
    assert build.stored_tarball.read_bytes() == tarball.read_bytes()
    assert build.stored_contents.read_bytes() == files[2].read_bytes()
    assert build.events.get().params["via"] == "cli"
    assert f"Build py801-2 uploaded (md5 {build.md5})" in out
    # Everything staged was moved into the store.
    assert listing(settings.UPLOAD_TEMP_DIR) == []


def test_it_records_the_portal_system_account_created_on_first_use(db, files, tmp_path):
    run(files[0])
    run(write_build(tmp_path / "second", "py801-3")[0])
    system = get_user_model().objects.get(username="portal")
    assert not system.has_usable_password()
    assert {build.uploaded_by for build in Build.objects.all()} == {system}


def test_it_records_the_user_given_with_by(cast, files):
    run(files[0], "--by", "alice")
    assert Build.objects.get().uploaded_by == cast.alice
    assert not get_user_model().objects.filter(username="portal").exists()


def test_it_uses_the_name_given_instead_of_the_archive_prefix(db, files):
    run(files[0], "--name", "py801-2b")
    build = Build.objects.get()
    assert build.name == "py801-2b"
    assert build.stored_tarball.name == "py801-2b-tree.tar.bz2"
    assert build.stored_contents.name == "py801-2b.contents"


def test_it_keeps_the_contents_hash_given(db, files):
    run(files[0], "--contents-hash", "abcdef0123456789")
    assert Build.objects.get().entered_contents_hash == "abcdef0123456789"


def test_it_leaves_the_original_files_in_place(db, files):
    before = {path: path.read_bytes() for path in files}
    run(files[0])
    assert {path: path.read_bytes() for path in files} == before


def test_it_refuses_a_missing_archive(db, tmp_path):
    missing = tmp_path / "py801-2-tree.tar.bz2"
    with pytest.raises(CommandError, match=re.escape(f"{missing} was not found")):
        run(missing)
    assert_nothing_stored()


def test_it_refuses_a_file_that_is_not_named_like_a_build_archive(db, files):
    wrong = files[0].rename(files[0].with_name("py801-2.tar.bz2"))
    with translation.override("en"), pytest.raises(CommandError, match="not a build archive"):
        run(wrong)
    assert_nothing_stored()


@pytest.mark.parametrize("companion", [1, 2], ids=["md5", "contents"])
def test_it_refuses_an_archive_without_its_companion_file(db, files, companion):
    files[companion].unlink()
    with pytest.raises(CommandError, match=re.escape(f"{files[companion]} was not found beside")):
        run(files[0])
    assert_nothing_stored()


def test_it_refuses_an_unknown_user(db, files):
    with pytest.raises(CommandError, match="No active user named 'mallory'"):
        run(files[0], "--by", "mallory")
    assert_nothing_stored()


def test_it_refuses_an_archive_whose_md5_file_does_not_match(db, tmp_path):
    wrong = "0" * 32
    tarball, _md5, _contents = write_build(
        tmp_path / "in", md5_text=f"{wrong}  py801-2-tree.tar.bz2\n"
    )
    with translation.override("en"), pytest.raises(CommandError) as caught:
        run(tarball)
    assert "Checksum mismatch" in str(caught.value)
    assert wrong in str(caught.value)
    assert_nothing_stored()


def test_it_refuses_a_malformed_contents_hash(db, files):
    with translation.override("en"), pytest.raises(CommandError, match="not a contents hash"):
        run(files[0], "--contents-hash", "no spaces allowed")
    assert_nothing_stored()


def test_it_refuses_a_contents_file_over_the_limit_and_discards_what_it_staged(db, files, settings):
    # The archive is staged before the .contents file is read: it must not be left behind.
    settings.MAX_CONTENTS_BYTES = 10
    with pytest.raises(CommandError, match="larger than the limit of 10 bytes"):
        run(files[0])
    assert_nothing_stored()


def test_it_refuses_a_reused_name_and_stores_nothing_more(db, files):
    run(files[0])
    first_store = listing(settings.BUILD_STORE_DIR)
    with translation.override("en"), pytest.raises(CommandError, match="already used"):
        run(files[0], "--name", "PY801-2")
    assert Build.objects.count() == 1
    assert listing(settings.BUILD_STORE_DIR) == first_store
    assert listing(settings.UPLOAD_TEMP_DIR) == []


def test_it_gives_up_waiting_after_the_timeout(db, files):
    # No worker runs here: the build stays uploaded.
    with pytest.raises(CommandError, match=r"Gave up waiting after 1 s; the build is uploaded"):
        run(files[0], "--wait", "--timeout", "1")
    assert Build.objects.get().status == BuildStatus.UPLOADED


# --- With a real worker ----------------------------------------------------------------------


def remove_published(name, build=None):
    folder = settings.PUPPETCONTENT_OS_DIR
    for suffix in ("-tree.tar.bz2", "-tree.tar.bz2.md5", ".contents", ".name"):
        (folder / f"{name}{suffix}").unlink(missing_ok=True)
    if build is not None:
        shutil.rmtree(build.store_path, ignore_errors=True)


@pytest.mark.worker
def test_it_waits_until_a_worker_has_published_the_build(live_worker, tmp_path):
    name = f"cli-{uuid.uuid4().hex[:10]}"
    tarball, _md5, _contents = write_build(tmp_path / "in", name)
    try:
        out, _err = run(tarball, "--wait", "--timeout", "90")
        build = Build.objects.get(name=name)
        assert build.status == BuildStatus.PUBLISHED, build.status_detail
        assert f"Build {name} is published." in out
        assert (settings.PUPPETCONTENT_OS_DIR / f"{name}.name").read_text() == f"{name}\n"
    finally:
        remove_published(name, Build.objects.filter(name=name).first())


@pytest.mark.worker
def test_it_exits_non_zero_with_the_reason_when_the_worker_finds_the_archive_corrupt(
    live_worker, tmp_path
):
    name = f"cli-{uuid.uuid4().hex[:10]}"
    tarball, _md5, _contents = write_build(tmp_path / "in", name, tarball=b"BZh9" + b"\0" * 4000)
    make_user("cli-test-uploader", "uploaders")
    out, err = io.StringIO(), io.StringIO()
    try:
        with pytest.raises(SystemExit) as caught:
            call_command(
                "import_build",
                str(tarball),
                "--by",
                "cli-test-uploader",
                "--wait",
                "--timeout",
                "90",
                stdout=out,
                stderr=err,
            )
        build = Build.objects.get(name=name)
        assert caught.value.code not in (0, None)
        assert build.status == BuildStatus.INVALID
        with translation.override("en"):  # the shell gets English, reasons included
            assert f"Build {name} is invalid: {build.status_detail}" in err.getvalue()
        assert "is published" not in out.getvalue()
        assert not (settings.PUPPETCONTENT_OS_DIR / f"{name}.name").exists()
    finally:
        remove_published(name, Build.objects.filter(name=name).first())


def test_it_refuses_to_record_someone_who_may_not_upload(cast, tmp_path):
    tarball, _md5, _contents = write_build(tmp_path / "in")
    with pytest.raises(CommandError, match="not in the uploaders group"):
        call_command("import_build", str(tarball), "--by", "dave")
    assert not Build.objects.exists()
