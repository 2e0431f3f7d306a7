"""A Celery worker SIGKILLed in the middle of validating or publishing: after a new worker and
the sweeper, the build is published exactly once, byte for byte, and no school server could
ever have seen a partial file (a watcher polls the puppet content folder the whole time)."""

import functools
import hashlib
import os
import random
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from releases import services, tasks
from releases.models import Build, BuildStatus, Phase

from ..factories import compress, make_user, stage, tar_bytes, write_build
from .conftest import PuppetWatcher, kill_hard, step_until, wait_for

pytestmark = pytest.mark.worker

FINAL = (BuildStatus.PUBLISHED, BuildStatus.INVALID, BuildStatus.PUBLISH_FAILED)


@functools.cache
def slow_to_validate() -> bytes:
    """bz2 of 8 MB of text: about half a second of decompression, long enough to stop the
    worker part-way through reading it."""
    rng = random.Random(5)
    words = [rng.randbytes(8).hex()[: rng.randint(2, 12)].encode() for _ in range(4000)]
    text = b" ".join(rng.choice(words) for _ in range(1_300_000))[: 8 * 1024 * 1024]
    return compress(tar_bytes({"usr/share/words.txt": text}), "bz2")


@functools.cache
def slow_to_publish() -> bytes:
    """xz of 12 MB of random bytes: quick to validate, but 12 MB to copy and checksum."""
    data = random.Random(7).randbytes(12 * 1024 * 1024)
    return compress(tar_bytes({"boot/initrd.img": data}), "xz")


def upload(tmp_path, tarball: bytes, compression: str):
    """Stage and create a build as the upload form would; returns it and the exact bytes
    each published file must have."""
    name = f"kill-{uuid.uuid4().hex[:8]}"
    paths = write_build(tmp_path / "in", name, compression=compression, tarball=tarball)
    uploader = make_user(f"up-{uuid.uuid4().hex[:6]}", "uploaders")
    staged = [stage(path, settings.UPLOAD_TEMP_DIR) for path in paths]
    build = services.build_create(
        acting_user=uploader, tarball=staged[0], md5_file=staged[1], contents=staged[2]
    )
    tarball_name = paths[0].name
    expected = {
        tarball_name: tarball,
        f"{tarball_name}.md5": f"{hashlib.md5(tarball).hexdigest()}  {tarball_name}\n".encode(),
        f"{name}.contents": paths[2].read_bytes(),
        f"{name}.name": f"{name}\n".encode(),
    }
    return build, expected


def current(build) -> Build:
    return Build.objects.get(pk=build.pk)


def recover(build, start_worker, env, settings):
    """A new worker, then the sweeper once the killed worker's claim has gone stale (no
    progress can arrive from a dead process), then wait for a final state."""
    start_worker(**env)
    settings.SWEEPER_STALE_AFTER = 1
    wait_for(
        lambda: current(build).progress_at < timezone.now() - timedelta(seconds=1.2),
        timeout=10,
        what="the claim going stale",
    )
    counts = tasks.sweep()
    assert counts["abandoned"] == 0
    return wait_for(
        lambda: (b := current(build)).status in FINAL and b,
        timeout=120,
        interval=0.2,
        what="the build reaching a final state",
    )


def assert_published_once(build, expected, folder, watcher):
    violations = watcher.stop()
    assert build.status == BuildStatus.PUBLISHED, build.status_detail
    assert violations == []
    assert watcher.polls > 50 and watcher.sightings == set(expected)
    assert build.events.filter(to_status=BuildStatus.PUBLISHED).count() == 1
    assert sorted(os.listdir(folder)) == sorted(expected)  # no temporary file left behind
    for name, data in expected.items():
        assert (folder / name).read_bytes() == data, name


def test_a_worker_killed_while_validating_is_replaced_and_the_build_published_once(
    start_worker, tmpfs, tmp_path, settings
):
    # Another filesystem than the build store: files are copied, so a partial copy exists
    # for a while under a temporary name.
    folder = settings.PUPPETCONTENT_OS_DIR = tmpfs("puppet", size="64m")
    env = {"PUPPETCONTENT_OS_DIR": str(folder)}
    worker = start_worker(**env)
    build, expected = upload(tmp_path, slow_to_validate(), "bz2")
    watcher = PuppetWatcher(folder, expected)
    watcher.start()

    def unpacking_the_archive():
        # The unpack runs in processes of its own (GNU tar under fakeroot), which the stopped
        # worker waits for: killed now, it dies in the middle of the archive phase, and its
        # unpack stops by itself (tests/releases/test_unpack_killed.py).
        b = current(build)
        return b.status == BuildStatus.VALIDATING and b.progress_phase == Phase.ARCHIVE

    step_until(worker, unpacking_the_archive, what="the middle of unpacking the archive")
    kill_hard(worker)
    assert current(build).status == BuildStatus.VALIDATING

    build = recover(build, start_worker, env, settings)

    assert_published_once(build, expected, folder, watcher)
    assert [e.to_status for e in build.events.exclude(to_status="")] == [
        "uploaded",
        "validating",
        "uploaded",  # requeued by the sweeper
        "validating",
        "valid",
        "publishing",
        "published",
    ]


def test_a_worker_killed_while_publishing_is_replaced_and_the_build_published_once(
    start_worker, tmpfs, tmp_path, settings
):
    folder = settings.PUPPETCONTENT_OS_DIR = tmpfs("puppet", size="64m")
    env = {"PUPPETCONTENT_OS_DIR": str(folder)}
    worker = start_worker(**env)
    build, expected = upload(tmp_path, slow_to_publish(), "xz")
    tarball_name = next(iter(expected))
    watcher = PuppetWatcher(folder, expected)
    watcher.start()

    def copying_or_verifying():
        temp = any(n.startswith(f".{tarball_name}.tmp-") for n in os.listdir(folder))
        return temp and current(build).status == BuildStatus.PUBLISHING

    step_until(
        worker, copying_or_verifying, run_for=0.002, what="the middle of placing the archive"
    )
    kill_hard(worker)
    assert not (folder / f"{build.name}.name").exists()
    # The dead worker's temporary copy, as the next attempt finds it SWEEPER_STALE_AFTER
    # later (a live publisher's file is younger, and is left alone).
    stale = time.time() - 3600
    leftovers = [p for p in folder.iterdir() if p.name.startswith(f".{tarball_name}.tmp-")]
    assert leftovers
    for path in leftovers:
        os.utime(path, (stale, stale))

    build = recover(build, start_worker, env, settings)

    assert_published_once(build, expected, folder, watcher)
    assert [e.to_status for e in build.events.exclude(to_status="")] == [
        "uploaded",
        "validating",
        "valid",
        "publishing",
        "valid",  # requeued by the sweeper
        "publishing",
        "published",
    ]
