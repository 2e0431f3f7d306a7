"""The disk fills up while publishing and while uploading, for real: a small tmpfs (we run as
root) that runs out of space mid-write. The build gets a clear reason, no temporary file is
left, and once space is back the retry (publication) or a new upload (upload) works."""

import os
import random
import signal
import uuid

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from portal.services import api_token_create
from releases import services
from releases.models import Build, BuildStatus

from ..factories import PASSWORD, compress, make_user, stage, tar_bytes, write_build
from .conftest import fill, step_until, wait_for

FINAL = (BuildStatus.PUBLISHED, BuildStatus.INVALID, BuildStatus.PUBLISH_FAILED)


def final(build):
    return wait_for(
        lambda: (b := Build.objects.get(pk=build.pk)).status in FINAL and b,
        timeout=90,
        interval=0.1,
        what="a final state",
    )


@pytest.mark.worker
def test_a_disk_filling_up_during_publication_fails_cleanly_and_the_retry_works(
    start_worker, tmpfs, tmp_path, settings
):
    # Its own filesystem, so the archive is copied (not linked) and the copy needs space.
    folder = settings.PUPPETCONTENT_OS_DIR = tmpfs("puppet", size="24m")
    worker = start_worker(PUPPETCONTENT_OS_DIR=str(folder))
    uploader = make_user(f"up-{uuid.uuid4().hex[:6]}", "uploaders")
    name = f"full-{uuid.uuid4().hex[:8]}"
    data = compress(tar_bytes({"boot/initrd.img": random.Random(3).randbytes(8 << 20)}), "xz")
    paths = write_build(tmp_path / "in", name, compression="xz", tarball=data)
    staged = [stage(path, settings.UPLOAD_TEMP_DIR) for path in paths]
    build = services.build_create(
        acting_user=uploader, tarball=staged[0], md5_file=staged[1], contents=staged[2]
    )

    # The free-space check passes; then, while the worker is stopped part-way through placing
    # the archive, something else takes every free byte.
    def placing_the_archive():
        temp = any(n.startswith(f".{paths[0].name}.tmp-") for n in os.listdir(folder))
        return temp and Build.objects.get(pk=build.pk).status == BuildStatus.PUBLISHING

    step_until(worker, placing_the_archive, run_for=0.002, what="placing the archive")
    filler = fill(folder, leave=0)
    os.kill(worker.pid, signal.SIGCONT)
    build = final(build)

    assert build.status == BuildStatus.PUBLISH_FAILED
    assert build.status_code == "publish_no_space"
    assert build.status_params["free"] < build.status_params["needed"]
    assert os.listdir(folder) == ["filler"]  # no partial or temporary file left

    filler.unlink()
    assert services.build_retry_publication(build=build, acting_user=uploader)
    build = final(build)
    assert build.status == BuildStatus.PUBLISHED, build.status_detail
    assert (folder / paths[0].name).read_bytes() == data
    assert (folder / f"{name}.name").read_text() == f"{name}\n"
    assert [e.to_status for e in build.events.exclude(to_status="")][-4:] == [
        "publish_failed",
        "valid",  # the retry
        "publishing",
        "published",
    ]


@pytest.fixture
def small_disk(tmpfs, settings):
    """Uploads and the build store on one 8 MB filesystem (they must share one: the upload is
    renamed into the store), filled until only 1 MB is free."""
    disk = tmpfs("data", size="8m")
    settings.UPLOAD_TEMP_DIR = disk / "uploads"
    settings.FILE_UPLOAD_TEMP_DIR = str(disk / "uploads")
    settings.BUILD_STORE_DIR = disk / "builds"
    settings.UPLOAD_TEMP_DIR.mkdir()
    return disk, fill(disk, leave=1 << 20)


def big_build(folder, name):
    """A 3 MB archive: more than the free space."""
    data = compress(tar_bytes({"boot/initrd.img": random.Random(4).randbytes(3 << 20)}), "xz")
    return write_build(folder, name, compression="xz", tarball=data)


def post(client, url, paths):
    with open(paths[0], "rb") as t, open(paths[1], "rb") as m, open(paths[2], "rb") as c:
        return client.post(url, {"tarball": t, "md5": m, "contents": c})


def leftovers(disk):
    return sorted(str(path.relative_to(disk)) for path in disk.rglob("*") if path.is_file())


@pytest.mark.parametrize("via", ["web", "api"])
def test_a_full_disk_during_an_upload_is_refused_clearly_and_a_new_upload_works(
    via, small_disk, cast, tmp_path
):
    disk, filler = small_disk
    if via == "web":
        client, url = Client(), reverse("releases:build_upload")
        assert client.login(username=cast.alice.username, password=PASSWORD)
    else:
        _token, key = api_token_create(user=cast.alice, name="builder")
        client, url = Client(HTTP_AUTHORIZATION=f"Token {key}"), reverse("api_builds")
    paths = big_build(tmp_path / "in", "py900-1")

    response = post(client, url, paths)

    assert response.status_code == (400 if via == "web" else 507)
    # The reason names the disk error (the sentence around it is in the user's language).
    assert "No space left on device" in response.content.decode()
    if via == "api":
        assert "No space left on device" in response.json()["errors"]["tarball"][0]
    assert not Build.objects.exists()
    assert leftovers(disk) == ["filler"]  # nothing stored, no temporary file

    filler.unlink()
    response = post(client, url, paths)
    assert response.status_code == (302 if via == "web" else 201)
    build = Build.objects.get()
    assert (build.name, build.status) == ("py900-1", BuildStatus.UPLOADED)
    assert build.stored_tarball.read_bytes() == paths[0].read_bytes()
    assert not os.listdir(settings.UPLOAD_TEMP_DIR)
