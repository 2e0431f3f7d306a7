"""The database restarts under load: gunicorn keeps answering, cleanly. While PostgreSQL is
down every request gets a short 503 (never a 500, never a hang) and /healthz says the
database is down; once it is back every request succeeds again without restarting gunicorn,
and every check-in answered 200 is stored while every one answered 503 is not. A build whose
worker loses the database in the middle of validating is published once it is back.

Only meaningful on PostgreSQL, and never on the shared server: the test runs a private
cluster of its own (initdb as the `postgres` OS user; we run as root, as CI does)."""

import glob
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from ..factories import write_build
from .conftest import step_until, wait_for
from .test_worker_killed import slow_to_validate

ROOT = Path(__file__).resolve().parents[2]
REQUEST_TIMEOUT = 10.0  # any answer slower than this counts as a hang
SERVERS = 2000  # one check-in per server, so each one's storage can be checked; enough
# that a slow restart under fast 503s does not use them all up before the database is back

pytestmark = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"),
    reason="a database restart is only meaningful on PostgreSQL (the suite runs on SQLite)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kwargs)


class Cluster:
    """A private PostgreSQL cluster on a free loopback port."""

    def __init__(self, bindir: str, folder: Path):
        self.bindir, self.folder = bindir, folder
        self.data, self.log = folder / "data", folder / "server.log"
        self.port = _free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/portal"

    def pg(self, tool, *args):
        result = _run(["runuser", "-u", "postgres", "--", f"{self.bindir}/{tool}", *args])
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            pytest.fail(f"{tool} failed: {result.stdout}{result.stderr}\n{log}")

    def init(self):
        self.pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self):
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                "-t", "30", "start")  # fmt: skip

    def stop(self, mode="fast"):
        self.pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")


@pytest.fixture
def cluster():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    # Not under pytest's tmp_path: the postgres user must be able to reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="portal-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    cluster = Cluster(os.path.dirname(found[-1]), folder)
    cluster.init()
    cluster.start()
    cluster.pg("createdb", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "portal")
    yield cluster
    _run(["runuser", "-u", "postgres", "--", f"{cluster.bindir}/pg_ctl", "-D",
          str(cluster.data), "-m", "immediate", "-w", "stop"])  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)


SETUP = """
import json
from django.contrib.auth import get_user_model, BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from schools.models import SchoolServer
from schools.services import server_token_rotate
user = get_user_model().objects.create_user("coord", password="unused-password-1")
user.groups.add(Group.objects.get(name="coordinators"))
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
tokens = {}
for i in range(%d):
    server = SchoolServer.objects.create(hostname=f"xs-{i}.local", name=f"xs-{i}")
    tokens[server.hostname] = server_token_rotate(server=server)
print(json.dumps({"session": session.session_key, "tokens": tokens}))
"""

COUNT = """
from schools.models import CheckIn
print(",".join(sorted(set(CheckIn.objects.values_list("server__hostname", flat=True)))))
"""


@pytest.fixture
def portal(cluster, tmp_path):
    """gunicorn as `make run` starts it, on the private cluster, with migrations applied."""
    env = dict(
        os.environ,
        DATABASE_URL=cluster.url,
        PORTAL_DATA_DIR=str(tmp_path / "data"),
        CELERY_BROKER_URL="filesystem://",
        DJANGO_SECRET_KEY="test-only-secret",
        DJANGO_DEBUG="false",
        DJANGO_HTTPS="false",
    )

    def manage(*args, stdin=None):
        result = _run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, input=stdin)
        assert result.returncode == 0, result.stderr
        return result.stdout

    manage("migrate", "--no-input", "-v", "0")
    seeded = json.loads(manage("shell", "-c", SETUP % SERVERS).strip().splitlines()[-1])
    from portal.run import web_command

    port = _free_port()
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - gunicorn owns it
    proc = subprocess.Popen(
        web_command(os.path.dirname(sys.executable), f"127.0.0.1:{port}"),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()

    class Portal:
        pass

    site = Portal()
    site.port, site.proc, site.manage, site.env = port, proc, manage, env
    site.session, site.tokens = seeded["session"], seeded["tokens"]
    site.log = tmp_path / "gunicorn.log"
    wait_for(lambda: _get(port, "/healthz")[0] == 200, timeout=60, what="gunicorn answering")
    yield site
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def _get(port, path, headers=None):
    try:
        return _request(port, "GET", path, headers=headers)
    except OSError:
        return 0, b"", {}


class Load:
    """A few threads firing dashboards, check-ins and /healthz; every answer is recorded
    as (kind, started, seconds, status, body, headers, server)."""

    def __init__(self, site, threads=4):
        self.site = site
        self.results = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.hostnames = iter(sorted(site.tokens))
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def one(self):
        kinds = ["dashboard", "checkin", "healthz"]
        with self.lock:
            kind = kinds[len(self.results) % 3]
            hostname = next(self.hostnames, None) if kind == "checkin" else None
        if kind == "checkin" and hostname is None:
            kind = "healthz"  # every server has reported once: keep the load going
        started = time.monotonic()
        try:
            if kind == "dashboard":
                cookie = f"sessionid={self.site.session}"
                status, body, headers = _request(
                    self.site.port, "GET", "/schools/", headers={"Cookie": cookie}
                )
            elif kind == "checkin":
                status, body, headers = _request(
                    self.site.port,
                    "POST",
                    "/api/schools/checkin/",
                    body=json.dumps({"hostname": hostname, "builds": []}),
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": f"Bearer {self.site.tokens[hostname]}",
                    },
                )
            else:
                status, body, headers = _request(self.site.port, "GET", "/healthz")
        except OSError as exc:  # a timeout is a hang; a reset is a dirty failure
            status, body, headers = -1, repr(exc).encode(), {}
        with self.lock:
            self.results.append(
                (kind, started, time.monotonic() - started, status, body, headers, hostname)
            )
        time.sleep(0.02)

    def run(self):
        deadline = time.monotonic() + 120
        for _ in range(5000):
            if self.stopping.is_set() or time.monotonic() > deadline:
                return
            self.one()

    def since(self, moment, kind=None):
        with self.lock:
            return [r for r in self.results if r[1] >= moment and kind in (None, r[0])]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)


def _kinds_answered(load, moment, status):
    return all(
        any(r[3] == status for r in load.since(moment, kind))
        for kind in ("dashboard", "checkin", "healthz")
    )


def test_requests_fail_cleanly_while_the_database_restarts_and_recover_after(portal, cluster):
    with Load(portal) as load:
        started = time.monotonic()
        wait_for(lambda: _kinds_answered(load, started, 200), timeout=30, what="a first answer")

        cluster.stop("fast")
        down = time.monotonic()
        wait_for(lambda: _kinds_answered(load, down, 503), timeout=30, what="503s while down")
        healthz_down = _get(portal.port, "/healthz")

        cluster.start()
        up = time.monotonic()
        wait_for(lambda: _kinds_answered(load, up, 200), timeout=30, what="answers after")
        wait_for(lambda: len(load.since(up)) >= 30, timeout=30, what="load after the restart")
    results = load.results

    assert portal.proc.poll() is None  # the same gunicorn throughout
    assert not [r for r in results if r[3] not in (200, 503)], "a 500, a reset or a hang"
    assert max(r[2] for r in results) < REQUEST_TIMEOUT
    for kind, _start, _s, status, body, headers, _h in results:
        if status == 503 and kind != "healthz":
            assert headers.get("Retry-After") == "5"
            assert len(body) < 300
    status, body, _headers = healthz_down
    assert status == 503 and json.loads(body)["database"]["ok"] is False
    after = [r for r in results if r[1] > up]
    assert after and all(r[3] == 200 for r in after), [r[:4] for r in after if r[3] != 200]

    # A check-in is stored exactly when it was answered 200.
    answered = sorted(r[6] for r in results if r[0] == "checkin" and r[3] == 200)
    stored = portal.manage("shell", "-c", COUNT).strip().splitlines()[-1]
    assert stored.split(",") == answered


UPLOADER = """
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from portal.services import api_token_create
user = get_user_model().objects.create_user("builder")
user.groups.add(Group.objects.get(name="uploaders"))
print(api_token_create(user=user, name="build machine")[1])
"""


def _query(cluster, sql, *params):
    """Rows from the private cluster, or None while it does not answer."""
    try:
        with psycopg.connect(cluster.url, connect_timeout=3, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()
    except psycopg.OperationalError:
        return None


def _status(cluster, name):
    rows = _query(cluster, "SELECT status FROM releases_build WHERE name = %s", name)
    return rows[0][0] if rows else None


def test_a_build_validating_while_the_database_restarts_is_published_after_it(
    portal, cluster, tmp_path
):
    """No state machine is left stuck: the worker loses the database in the middle of
    validating, its retries find the build already claimed, and the sweeper hands it to
    validation again once the claim is stale; the build ends published, once."""
    env = dict(portal.env, SWEEPER_STALE_AFTER="1")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q",
             settings.TEST_WORKER_QUEUES, "--pool", "solo", "--without-mingle", "--without-gossip",
             "-n", f"restart-{os.getpid()}@%h", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: b" ready." in log_path.read_bytes(), timeout=60, what="the worker")
        token = portal.manage("shell", "-c", UPLOADER).strip().splitlines()[-1]
        name = "dbrestart-1"
        tarball, md5, contents = write_build(tmp_path / "in", name, tarball=slow_to_validate())
        upload = _run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
             f"Authorization: Token {token}", "-F", f"tarball=@{tarball}", "-F", f"md5=@{md5}",
             "-F", f"contents=@{contents}", f"http://127.0.0.1:{portal.port}/api/builds/"]
        )  # fmt: skip
        assert upload.stdout == "201", upload.stderr

        step_until(
            worker,
            lambda: _status(cluster, name) == "validating",
            what="the middle of validating",
        )
        cluster.stop("fast")
        os.kill(worker.pid, signal.SIGCONT)
        wait_for(
            lambda: b"Retry in" in log_path.read_bytes(),
            timeout=30,
            what="the worker meeting the stopped database",
        )
        cluster.start()
        # The retry finds the build claimed by the attempt that failed: nothing to do.
        wait_for(
            lambda: b"succeeded" in log_path.read_bytes().split(b"Retry in", 1)[1],
            timeout=60,
            what="the retry ending",
        )
        assert _status(cluster, name) == "validating"

        sweep = _run(
            [sys.executable, "manage.py", "shell", "-c",
             "from releases import tasks; print(tasks.sweep()['validate'])"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        assert sweep.stdout.strip().splitlines()[-1] == "1", sweep.stderr
        wait_for(
            lambda: _status(cluster, name) in ("published", "invalid", "publish_failed"),
            timeout=90,
            what="a final state",
        )
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()

    assert _status(cluster, name) == "published", log_path.read_text()[-3000:]
    events = _query(
        cluster,
        "SELECT e.to_status FROM releases_auditevent e JOIN releases_build b "
        "ON b.id = e.build_id WHERE b.name = %s AND e.to_status <> '' ORDER BY e.id",
        name,
    )
    assert [row[0] for row in events] == [
        "uploaded",
        "validating",
        "uploaded",  # requeued by the sweeper
        "validating",
        "valid",
        "publishing",
        "published",
    ]
