import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from portal import roles
from portal.celery import app as celery_app
from releases import services
from releases.models import BuildStatus

from .factories import make_user, stage, write_build


@pytest.fixture(autouse=True)
def data_dir(request, settings, tmp_path):
    """Every test gets its own data folder: build store, uploads, puppet content. Tests with
    a real worker share the configured one with it instead (they use unique build names)."""
    # Real password hashing costs ~0.5 s a user; the tests are not about it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if "start_worker" in request.fixturenames:
        return settings.PORTAL_DATA_DIR
    data = tmp_path / "data"
    settings.PORTAL_DATA_DIR = data
    settings.BUILD_STORE_DIR = data / "builds"
    settings.UPLOAD_TEMP_DIR = data / "uploads"
    settings.FILE_UPLOAD_TEMP_DIR = str(data / "uploads")
    settings.PUPPETCONTENT_OS_DIR = data / "puppetcontent" / "os"
    return data


@pytest.fixture
def cast(db):
    """The people in these tests:
    - alice uploads builds,
    - bob uploads builds too (a second uploader),
    - carol approves promotions,
    - dave coordinates (reads dashboards),
    - root is a superuser,
    - eve is logged in but holds no role.
    """

    class Cast:
        alice = make_user("alice", roles.UPLOADERS)
        bob = make_user("bob", roles.UPLOADERS)
        carol = make_user("carol", roles.APPROVERS)
        dave = make_user("dave", roles.COORDINATORS)
        root = make_user("root", superuser=True)
        eve = make_user("eve")

    return Cast


def pytest_report_header(config):
    db = django_settings.DATABASES["default"]
    return [f"database: {db['ENGINE']} · broker: {django_settings.CELERY_BROKER_URL}"]


def _database_url(db: dict) -> str:
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def start_worker(transactional_db, tmp_path):
    """Starts a real Celery worker (both queues) on the configured broker and the test
    database, when the test says so; stopped at the end of the test.

    `start_worker()` returns once the worker answers a ping. Messages an earlier run left in
    the broker are harmless: tasks re-fetch by id and act only on a build in the right state."""
    from django.db import connection

    procs = []
    log_path = tmp_path / "worker.log"

    def start(**extra_env):
        env = dict(os.environ, DATABASE_URL=_database_url(connection.settings_dict), **extra_env)
        hostname = f"test-worker-{os.getpid()}-{len(procs)}@%h"
        log = open(log_path, "ab")  # noqa: SIM115 - the worker owns it until the end
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "-Q",
                django_settings.TEST_WORKER_QUEUES,
                "--pool",
                "solo",
                "--without-mingle",
                "--without-gossip",
                "-n",
                hostname,
                "--loglevel",
                "INFO",
            ],
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        procs.append(proc)
        deadline = time.monotonic() + 60
        while not celery_app.control.ping(
            destination=[hostname.replace("%h", _host())], timeout=0.5
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the Celery worker did not start:\n" + log_path.read_text())
        return proc

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _host():
    import socket

    return socket.gethostname()


@pytest.fixture
def live_worker(start_worker):
    return start_worker()


@pytest.fixture(autouse=True)
def oatslite(settings, tmp_path):
    settings.OATSLITE_UPDATES_CFG = tmp_path / "oatslite" / "updates.cfg"
    settings.OATSLITE_RESTART_COMMAND = []
    settings.OATSLITE_HEALTHCHECK_COMMAND = []
    return settings.OATSLITE_UPDATES_CFG


@pytest.fixture
def published(cast, tmp_path):
    """A published build uploaded by `uploader` (alice by default), with a contents hash;
    its archive is `tarball` (compressed with `compression`) or the factories' default."""

    def _published(
        name=None, *, uploader=None, contents_hash=None, tarball=None, compression="bz2"
    ):
        name = name or f"py{uuid.uuid4().hex[:6]}"
        paths = write_build(tmp_path / "in" / name, name, tarball=tarball, compression=compression)
        staged = [stage(path, django_settings.UPLOAD_TEMP_DIR) for path in paths]
        build = services.build_create(
            acting_user=uploader or cast.alice,
            tarball=staged[0],
            md5_file=staged[1],
            contents=staged[2],
            contents_hash=contents_hash or uuid.uuid4().hex,
        )
        services.build_validate(build_id=build.pk)
        services.build_publish(build_id=build.pk)
        build.refresh_from_db()
        assert build.status == BuildStatus.PUBLISHED, build.status_detail
        return build

    return _published


@pytest.fixture
def unhashed(cast, tmp_path):
    """A published build whose contents hash nobody has entered yet."""

    def _unhashed(name="py901-1", *, uploader=None):
        paths = write_build(tmp_path / "in" / name, name)
        staged = [stage(path, django_settings.UPLOAD_TEMP_DIR) for path in paths]
        build = services.build_create(
            acting_user=uploader or cast.alice,
            tarball=staged[0],
            md5_file=staged[1],
            contents=staged[2],
        )
        services.build_validate(build_id=build.pk)
        services.build_publish(build_id=build.pk)
        build.refresh_from_db()
        assert build.status == BuildStatus.PUBLISHED, build.status_detail
        assert build.contents_hash == ""
        return build

    return _unhashed
