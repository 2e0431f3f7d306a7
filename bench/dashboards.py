"""Dashboards and check-ins at deployment scale, measured against a trivial page.

Run: .venv/bin/python bench/dashboards.py [--servers 5000] [--builds 50] [--seconds 15]

1. A fresh PORTAL_DATA_DIR; DATABASE_URL / CELERY_BROKER_URL from the environment if set
   (PostgreSQL + Redis in production), else the embedded defaults (SQLite).
2. Seed: `--servers` school servers x `--builds` published builds, each server holding
   most builds (one sync state each), one offered build, a report token per server.
3. gunicorn as in production (gthread) on a free loopback port.
4. Page times: median and p95 of the overview, a filtered overview, a per-build coverage
   page and a per-server page, each divided by the median of a trivial logged-in page
   measured in the same run.
5. Check-ins: threads post valid reports as distinct servers for `--seconds` (bounded in
   time and count); prints requests per second, p50/p95 latency and errors.

It prints figures and ratios; it asserts nothing about time.
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from portal.run import web_command  # noqa: E402 - needs the repository on sys.path

PYTHON = str(ROOT / ".venv" / "bin" / "python")

SEED = r"""
import json, sys
from datetime import timedelta
import django
django.setup()
from django.contrib.auth.models import Group, User
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.auth import SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY
from django.utils import timezone
from releases.models import Build, BuildStatus, OfferedEntry
from schools.models import SchoolServer, SyncState, hash_token

servers, builds = int(sys.argv[1]), int(sys.argv[2])
now = timezone.now()
coordinator = User.objects.create_user("bench", password="bench-password-1")
coordinator.groups.add(Group.objects.get(name="coordinators"))
build_rows = Build.objects.bulk_create(
    Build(name=f"py{index:03d}-1", compression="bz2", status=BuildStatus.PUBLISHED, size=1,
          md5=f"{index:032x}", sha256="0" * 64, contents_size=1, contents_sha256="0" * 64,
          store_dir=f"s{index}", uploaded_by=coordinator, original_filename="x",
          contents_hash=f"hash{index:08d}", published_at=now - timedelta(days=builds - index))
    for index in range(builds))
newest = build_rows[-1]
Build.objects.filter(pk=newest.pk).update(status=BuildStatus.OFFERED)
OfferedEntry.objects.create(section=newest.contents_hash, build=newest, name=newest.name,
                            priority="normal", update_path="x", position=1)
keys = [f"bench-token-{index:06d}" for index in range(servers)]
server_rows = SchoolServer.objects.bulk_create(
    SchoolServer(hostname=f"xs-{index:05d}.local", name=f"xs-{index}", school=f"Escuela {index}",
                 department=f"Departamento {index % 17}", token_hash=hash_token(keys[index]),
                 last_report_at=now - timedelta(hours=index % 60))
    for index in range(servers))
batch = []
for number, server in enumerate(server_rows):
    for index, build in enumerate(build_rows):
        if (number + index) % 10 == 0:
            continue  # about 10% missing, so there are lagging servers
        batch.append(SyncState(server=server, build=build, build_name=build.name,
                               status="present", held_since=now - timedelta(hours=index)))
    if len(batch) > 20000:
        SyncState.objects.bulk_create(batch)
        batch = []
SyncState.objects.bulk_create(batch)
session = SessionStore()
session[SESSION_KEY] = str(coordinator.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = coordinator.get_session_auth_hash()
session.create()
print(json.dumps({"session": session.session_key, "keys": keys, "build": build_rows[0].name,
                  "server": server_rows[0].hostname}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed_get(port, path, cookie) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    conn.request("GET", path, headers={"Cookie": f"sessionid={cookie}", "Host": "127.0.0.1"})
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status}")
    return elapsed


def measure_pages(port, cookie, pages, rounds):
    results = {}
    for label, path in pages:
        timed_get(port, path, cookie)  # warm up
        samples = sorted(timed_get(port, path, cookie) for _ in range(rounds))
        results[label] = (statistics.median(samples), samples[int(0.95 * (len(samples) - 1))])
    return results


def checkin_load(port, keys, seconds, threads=8, limit=200_000):
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.monotonic() + seconds
    counter = iter(range(limit))

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            key = keys[index % len(keys)]
            body = json.dumps(
                {
                    "hostname": f"xs-{index % len(keys):05d}.local",
                    "builds": [{"name": "py000-1", "verified": False}],
                    "disk_free_bytes": 10**10,
                    "client_version": "bench",
                }
            )
            started = time.perf_counter()
            try:
                conn.request(
                    "POST",
                    "/api/schools/checkin/",
                    body=body,
                    headers={
                        "Authorization": f"Bearer {key}",
                        "Content-Type": "application/json",
                        "Host": "127.0.0.1",
                    },
                )
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException) as exc:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                response = exc
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if not ok:
                    errors.append(getattr(response, "status", repr(response)))
        conn.close()

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.monotonic() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / wall,
        "p50": latencies[len(latencies) // 2] if latencies else 0,
        "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0,
        "errors": len(errors),
        "error_sample": errors[:5],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=5000)
    parser.add_argument("--builds", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="xo-bench-dash-")
    env = dict(
        os.environ,
        PORTAL_DATA_DIR=data,
        DJANGO_SETTINGS_MODULE="portal.settings",
        DJANGO_SECRET_KEY="bench-only",
        DJANGO_DEBUG="false",
        DJANGO_HTTPS="false",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="WARNING",
    )
    database = env.get("DATABASE_URL", "sqlite (embedded default)")
    if env.get("DATABASE_URL", "").startswith("postgres"):
        print(
            "Note: the bench migrates and seeds the database named in DATABASE_URL; use a "
            "scratch database."
        )
    print(f"database: {database}")
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    started = time.monotonic()
    seeded = subprocess.run(
        [PYTHON, "-c", SEED, str(args.servers), str(args.builds)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    seed = json.loads(seeded.stdout.strip().splitlines()[-1])
    print(
        f"seeded {args.servers} servers x {args.builds} builds in "
        f"{time.monotonic() - started:.0f} s"
    )

    port = free_port()
    web = subprocess.Popen(
        [
            *web_command(str(ROOT / ".venv" / "bin"), f"127.0.0.1:{port}"),
            "--log-level",
            "warning",
            "--access-logfile",
            os.devnull,
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                timed_get(port, "/schools/client/", seed["session"])
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        pages = [
            ("trivial page (/schools/client/)", "/schools/client/"),
            ("overview", "/schools/"),
            ("overview, filtered", "/schools/?state=behind&department=Departamento+3&q=xs"),
            ("overview, last page", "/schools/?page=50"),
            ("build coverage", f"/schools/builds/{seed['build']}/"),
            ("server page", f"/schools/{seed['server']}/"),
        ]
        results = measure_pages(port, seed["session"], pages, args.rounds)
        base = results[pages[0][0]][0]
        print(f"\n{'page':<34}{'median':>10}{'p95':>10}{'ratio':>8}")
        for label, (median, p95) in results.items():
            print(f"{label:<34}{median * 1000:>8.1f}ms{p95 * 1000:>8.1f}ms{median / base:>8.1f}")

        load = checkin_load(port, seed["keys"], args.seconds)
        print(
            f"\ncheck-ins through gunicorn: {load['requests']} in {args.seconds:g} s, "
            f"{load['rps']:.0f}/s, p50 {load['p50'] * 1000:.1f} ms, "
            f"p95 {load['p95'] * 1000:.1f} ms, errors {load['errors']} {load['error_sample']}"
        )
    finally:
        web.terminate()
        web.wait(timeout=30)
        subprocess.run(["rm", "-rf", data], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
