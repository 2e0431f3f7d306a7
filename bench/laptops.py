"""Laptop reports ingested per second through gunicorn: single reports (Inventario's form)
and batches of 500 (a JSON list), on the embedded SQLite or on PostgreSQL.

Run: .venv/bin/python bench/laptops.py [--postgres postgres://postgres@127.0.0.1:5432]
                                      [--database xo_bench_laptops] [--laptops 50000]
                                      [--seconds 20] [--threads 4] [--servers 200]

1. A throwaway PORTAL_DATA_DIR; with `--postgres`, a fresh database `--database` there
   (its name must start with xo_bench_; dropped before and after the run), else SQLite.
2. Migrate; a reporter account (HTTP Basic, as oatslite or a relay would post) and
   `--servers` school servers with addresses (80 % of the laptops' addresses match one).
3. gunicorn with the production command line (portal/run.py `web_command`).
4. Single reports for `--seconds`: `--threads` keep-alive connections post the form, one
   report a request, each a laptop of a pool of `--laptops`, every report newer than the
   laptop's last (so every one is news, never a cheap repeat).
5. Batches of 500 for `--seconds`, the same way; after the first pass over the pool every
   report updates an existing laptop (the daily case), and a tenth of the laptops change
   version on every pass (history rows and their pruning).
6. Prints reports per second, request latency p50/p95, errors, the CPU gunicorn used, how
   many laptops, version changes and day counts the database holds, and on PostgreSQL the
   size of the laptops' table with its indexes per laptop.

Exit status: 0 when the run completed (whatever the figures), 2 on an error, 130 when
interrupted. It asserts nothing about time; the goal (issue 13) is >= 2,000 reports/s in
batches on 2 cores.
"""

import argparse
import base64
import http.client
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import harness

USER, PASSWORD = "bench-reporter", "bench-reporter-password"
VHASHES = [f"{n:x}" * 64 for n in range(1, 8)]
BATCH = 500
HTTP_TIMEOUT = 60

SETUP = """
from django.contrib.auth.models import Group, User
from schools.models import SchoolServer
user = User.objects.create_user({user!r}, password={password!r})
user.groups.add(Group.objects.get(name="reporters"))
SchoolServer.objects.bulk_create(
    SchoolServer(hostname=f"xs-bench-{{n}}.local", school=f"Escuela {{n}}",
                 address=f"10.{{n // 250}}.{{n % 250}}.1")
    for n in range({servers})
)
"""

COUNT = """
from django.db import connection
from schools.models import Laptop, LaptopDay, LaptopVersionChange
size = 0
if connection.vendor == "postgresql":
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size('schools_laptop')")
        size = cursor.fetchone()[0]
print(Laptop.objects.count(), LaptopVersionChange.objects.count(), LaptopDay.objects.count(), size)
"""


class Source:
    """Reports in time order: report i is laptop i mod `laptops`, a millisecond after
    report i - 1 (so always newer than that laptop's last)."""

    def __init__(self, laptops, servers):
        self.laptops = laptops
        self.servers = servers
        self.counter = itertools.count()
        self.lock = threading.Lock()
        self.start = datetime.now(UTC) - timedelta(days=20)

    def take(self, count):
        with self.lock:
            first = next(self.counter)
            for _ in range(count - 1):
                next(self.counter)
        return [self.report(i) for i in range(first, first + count)]

    def report(self, i):
        n = i % self.laptops
        rounds = i // self.laptops
        # A fifth of the addresses match no server (n / 0.8 spreads them past the last).
        server = int(n % max(1, int(self.servers / 0.8)))
        return {
            "laptop": f"SHC{n:08X}",
            "connected_at": (self.start + timedelta(milliseconds=i)).isoformat(),
            "ip_address": f"10.{server // 250}.{server % 250}.1",
            "free_space": 1_000_000 + n,
            "stolen": n % 997 == 0,
            "vhash": VHASHES[(rounds if n % 10 == 0 else 0) % len(VHASHES)],
        }


def run_phase(port, source, *, batch, seconds, threads):
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    latencies, errors, sent, lock = [], [], [0], threading.Lock()
    deadline = time.monotonic() + seconds

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
        while time.monotonic() < deadline:
            reports = source.take(batch)
            if batch == 1:
                fields = {**reports[0], "stolen": str(reports[0]["stolen"]).lower()}
                body = urlencode(fields).encode()
                kind = "application/x-www-form-urlencoded"
            else:
                body = json.dumps(reports).encode()
                kind = "application/json"
            headers = {"Authorization": auth, "Content-Type": kind, "Host": "127.0.0.1"}
            started = time.perf_counter()
            try:
                conn.request("POST", "/api/laptops/report/", body, headers)
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
                with lock:
                    errors.append(type(exc).__name__)
                continue
            elapsed = time.perf_counter() - started
            with lock:
                if response.status == 200:
                    latencies.append(elapsed)
                    sent[0] += len(reports)
                else:
                    errors.append(f"HTTP {response.status}: {answer[:200]!r}")
        conn.close()

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sent[0], time.monotonic() - started, sorted(latencies), errors


def percentile(values, share):
    return values[int(share * (len(values) - 1))] if values else float("nan")


def manage(env, code):
    return subprocess.run(
        [harness.PYTHON, "manage.py", "shell", "-c", code],
        cwd=harness.ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default="", help="e.g. postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="xo_bench_laptops")
    parser.add_argument("--laptops", type=int, default=50_000)
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    if args.postgres and not harness.DB_NAME_RE.match(args.database):
        parser.error("--database must match xo_bench_[a-z0-9_]+ (it is dropped)")
    tmp = tempfile.mkdtemp(prefix="xo-bench-laptops-")
    overrides = {}
    if args.postgres:
        overrides["DATABASE_URL"] = f"{args.postgres.rstrip('/')}/{args.database}"
        harness.create_database(args.postgres.rstrip("/"), args.database)
    env = harness.portal_env(tmp, **overrides)
    web = None
    try:
        subprocess.run(
            [harness.PYTHON, "manage.py", "migrate", "-v0"], cwd=harness.ROOT, env=env, check=True
        )
        manage(env, SETUP.format(user=USER, password=PASSWORD, servers=args.servers))
        port = harness.free_port()
        web = harness.start_web(env, port)

        def ready():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz", headers={"Host": "127.0.0.1"})
            return conn.getresponse().status == 200

        harness.wait_until(ready)
        source = Source(args.laptops, args.servers)
        database = "PostgreSQL" if args.postgres else "SQLite"
        print(f"{database}, {args.laptops} laptops, {args.servers} servers, {args.threads} threads")
        print(f"load average before: {harness.load_average()}")
        print("phase      reports  seconds  reports/s  requests  p50 ms  p95 ms  errors  web CPU s")
        for label, batch in (("single", 1), (f"batch {BATCH}", BATCH)):
            pids = harness.process_tree(web.pid)
            cpu = harness.cpu_seconds(pids)
            sent, elapsed, latencies, errors = run_phase(
                port, source, batch=batch, seconds=args.seconds, threads=args.threads
            )
            cpu = harness.cpu_seconds(pids) - cpu
            print(
                f"{label:<10} {sent:>7}  {elapsed:>7.1f}  {sent / elapsed:>9.0f}  "
                f"{len(latencies):>8}  {percentile(latencies, 0.5) * 1000:>6.1f}  "
                f"{percentile(latencies, 0.95) * 1000:>6.1f}  {len(errors):>6}  {cpu:>9.1f}"
            )
            for error in sorted(set(errors))[:5]:
                print(f"  error: {error}")
        counts = manage(env, COUNT).strip().splitlines()[-1].split()
        laptops, changes, days, size = (int(value) for value in counts)
        print(f"stored: {laptops} laptops, {changes} version changes, {days} day counts")
        if size:
            print(f"laptops table with its indexes: {size / laptops:.0f} bytes a laptop")
        print(f"load average after: {harness.load_average()}")
        return 0
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if web is not None:
            harness.stop(web)
        if args.postgres:
            harness.drop_database(args.postgres.rstrip("/"), args.database)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
