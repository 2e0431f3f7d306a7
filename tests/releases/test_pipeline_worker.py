"""The whole pipeline through a real Celery worker on the real broker (Redis in CI, the
filesystem broker on the embedded defaults)."""

import time
import uuid

import pytest
from django.conf import settings

from releases import services
from releases.models import Build, BuildStatus

from ..factories import make_user, stage, write_build

pytestmark = pytest.mark.worker


def wait_for_final(build, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        build.refresh_from_db()
        if build.status in (BuildStatus.PUBLISHED, BuildStatus.INVALID, BuildStatus.PUBLISH_FAILED):
            return build
        time.sleep(0.2)
    pytest.fail(f"build stayed {build.status} for {timeout} s")


def test_a_worker_validates_and_publishes_an_uploaded_build(live_worker, tmp_path):
    uploader = make_user("worker-test-uploader", "uploaders")
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    paths = write_build(tmp_path / "in", name, compression="xz")
    staged = [stage(path, settings.UPLOAD_TEMP_DIR) for path in paths]
    build = services.build_create(
        acting_user=uploader, tarball=staged[0], md5_file=staged[1], contents=staged[2]
    )
    wait_for_final(build)
    assert build.status == BuildStatus.PUBLISHED, build.status_detail
    folder = settings.PUPPETCONTENT_OS_DIR
    try:
        assert (folder / f"{name}.name").read_text() == f"{name}\n"
        assert (
            folder / f"{name}-tree.tar.xz.md5"
        ).read_text() == f"{build.md5}  {name}-tree.tar.xz\n"
        assert [e.to_status for e in build.events.exclude(to_status="")] == [
            "uploaded",
            "validating",
            "valid",
            "publishing",
            "published",
        ]
    finally:
        for suffix in ("-tree.tar.xz", "-tree.tar.xz.md5", ".contents", ".name"):
            (folder / f"{name}{suffix}").unlink(missing_ok=True)


def test_a_worker_marks_a_corrupt_build_invalid_and_publishes_nothing(live_worker, tmp_path):
    uploader = make_user("worker-test-uploader", "uploaders")
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    paths = write_build(tmp_path / "in", name, tarball=b"BZh9" + b"\x00" * 4000)
    staged = [stage(path, settings.UPLOAD_TEMP_DIR) for path in paths]
    build = services.build_create(
        acting_user=uploader, tarball=staged[0], md5_file=staged[1], contents=staged[2]
    )
    wait_for_final(build)
    assert build.status == BuildStatus.INVALID
    # lbzip2 (or bzip2) says so; tar would only meet the end of its input.
    assert build.status_code == "archive_decompress_failed"
    assert not (settings.PUPPETCONTENT_OS_DIR / f"{name}.name").exists()
    assert Build.objects.count() == 1
