"""Check-ins from thousands of school servers and dashboards from 20 coordinators, at the
same time, through gunicorn + PostgreSQL + Redis, against the targets of issue 5.

Run: .venv/bin/python bench/load.py [--quick] [--seconds 60] [--servers 5000] [--strict]

1. A fresh database on the local PostgreSQL (`--postgres`, `--database`; dropped at the end
   unless --keep), Redis as the broker (`--redis`), a throwaway PORTAL_DATA_DIR.
2. Seed (bench/schoolseed.py): `--servers` servers with a report token each, `--builds`
   published builds (about 90 % held by each server, the newest offered), one logged-in
   session per coordinator.
3. gunicorn with the production command line (portal/run.py `web_command`).
4. Steady phase (the first two thirds of `--seconds`): every server reports once per
   `--interval`, spread evenly (open loop: requests leave on schedule, however slow the
   answers); each report is what schools/client/xs-sync-report sends for that server.
5. Herd phase (the last third): every server reports at once, through `--herd-connections`
   connections as fast as they are answered, until each has reported or the phase ends.
6. Throughout both, `--coordinators` logged-in coordinators browse the dashboards (overview,
   filtered overview, per-build and per-server pages, CSV export) with `--think` seconds
   between pages on average.
7. Per phase and kind of request: count, rate, p50/p95/p99/max latency, errors (any answer
   outside 2xx/3xx, or no answer); the CPU the generator and the server used; PASS/FAIL.

Exit status: 0 when the run completed (whatever PASS/FAIL says), 1 when a target was missed
and --strict was given, 2 on an error, 130 when interrupted.
"""

import argparse
import http.client
import json
import math
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from datetime import UTC, datetime

import harness
import schoolseed

CHECKIN = "check-in"
PAGES = ["overview", "overview filtered", "build page", "server page", "CSV export"]
PAGE_WEIGHTS = [30, 20, 20, 25, 5]
STATES = ["up_to_date", "behind", "silent", "lost", "never"]
CHECKIN_P95_MS = 100
DASHBOARD_P95_MS = 500
HTTP_TIMEOUT = 30
IDLE_SECONDS = 1.0
# It is dropped (WITH FORCE) before and after the run: only names no real database has.


class Recorder:
    """Latencies and errors per (phase, kind), from many threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = defaultdict(list)
        self.errors = defaultdict(Counter)
        self.lag = []

    def add(self, phase, kind, seconds, error=None):
        with self.lock:
            self.latencies[phase, kind].append(seconds)
            if error is not None:
                self.errors[phase, kind][error] += 1


class Connection:
    """One keep-alive HTTP connection, replaced when broken, and reopened once it has been
    idle for IDLE_SECONDS: gunicorn closes idle connections after its keepalive (2 s), and a
    request sent on a connection the server is closing would count as an error here, where
    a browser would quietly retry it."""

    def __init__(self, port):
        self.port = port
        self.conn = None
        self.used = 0.0

    def request(self, method, path, body=None, headers=()):
        """(seconds, error or None): error is the status outside 2xx/3xx or the exception."""
        if self.conn is not None and time.monotonic() - self.used > IDLE_SECONDS:
            self.close()
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        started = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers={"Host": "127.0.0.1", **headers})
            response = self.conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return time.perf_counter() - started, type(exc).__name__
        elapsed = time.perf_counter() - started
        self.used = time.monotonic()
        if response.will_close:
            self.close()
        return elapsed, None if 200 <= response.status < 400 else f"HTTP {response.status}"

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Reports:
    """What each server sends: the builds it holds with their md5, verified, as
    xs-sync-report does. Built once up front so the generator only joins bytes."""

    def __init__(self, servers, builds):
        self.parts = []
        for number in range(servers):
            held = [
                {"name": schoolseed.build_name(i), "md5": schoolseed.build_md5(i), "verified": True}
                for i in range(builds)
                if schoolseed.holds(number, i)
            ]
            head = json.dumps({"hostname": schoolseed.hostname(number), "builds": held})
            tail = f', "last_refresh_status": 0, "disk_free_bytes": {(number % 90 + 10) * 10**9}'
            self.parts.append(
                (
                    (head[:-1] + ', "clock": "').encode(),
                    (f'"{tail}, "client_version": "1"}}').encode(),
                    f"Bearer {schoolseed.token(number)}",
                )
            )

    def send(self, connection, number):
        head, tail, authorization = self.parts[number]
        clock = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
        return connection.request(
            "POST",
            "/api/schools/checkin/",
            body=head + clock + tail,
            headers={"Authorization": authorization, "Content-Type": "application/json"},
        )


def steady_checkins(port, reports, order, rate, start, end, recorder, threads=16):
    """Open loop: request k leaves at start + k / rate, as server order[k % len(order)]."""
    total = min(int((end - start) * rate), 10 * len(order))

    def sender(first):
        connection = Connection(port)
        for k in range(first, total, threads):
            due = start + k / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if time.monotonic() >= end:
                break
            with recorder.lock:
                recorder.lag.append(max(0.0, -wait))
            elapsed, error = reports.send(connection, order[k % len(order)])
            recorder.add("steady", CHECKIN, elapsed, error)
        connection.close()

    return [threading.Thread(target=sender, args=(first,)) for first in range(threads)]


def herd_checkins(port, reports, order, end, recorder, connections):
    """Closed loop: every server once, as fast as `connections` connections are answered."""
    queue = iter(order)
    lock = threading.Lock()
    finished = []

    def sender():
        connection = Connection(port)
        while time.monotonic() < end:
            with lock:
                number = next(queue, None)
            if number is None:
                break
            elapsed, error = reports.send(connection, number)
            recorder.add("herd", CHECKIN, elapsed, error)
        with lock:
            finished.append(time.monotonic())
        connection.close()

    return [threading.Thread(target=sender) for _ in range(connections)], finished


def coordinator(port, session, seed, args, phase_of, end, recorder):
    """Browse like a person: a page, a pause of about `think` seconds, another page."""
    rng = random.Random(seed)
    connection = Connection(port)
    cookie = {"Cookie": f"sessionid={session}"}
    pages = harness.overview_pages(args.servers)
    time.sleep(rng.uniform(0, args.think))
    while time.monotonic() < end:
        kind = rng.choices(PAGES, PAGE_WEIGHTS)[0]
        if kind == "overview":
            path = f"/schools/?page={rng.randint(1, pages)}"
        elif kind == "overview filtered":
            department = rng.randrange(schoolseed.DEPARTMENTS)
            path = f"/schools/?department=Departamento+{department}&state={rng.choice(STATES)}&q=xs"
        elif kind == "build page":
            path = f"/schools/builds/{schoolseed.build_name(rng.randrange(args.builds))}/"
        elif kind == "server page":
            path = f"/schools/{schoolseed.hostname(rng.randrange(args.servers))}/"
        else:
            path = "/schools/?format=csv"
        phase = phase_of(time.monotonic())
        elapsed, error = connection.request("GET", path, headers=cookie)
        recorder.add(phase, kind, elapsed, error)
        pause = rng.uniform(0.5, 1.5) * args.think
        time.sleep(max(0.0, min(pause, end - time.monotonic())))
    connection.close()


def percentile(ordered, share):
    """Nearest rank."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summary(recorder, durations):
    rows = []
    for phase in ("steady", "herd"):
        for kind in [CHECKIN, *PAGES]:
            samples = sorted(recorder.latencies.get((phase, kind), []))
            errors = recorder.errors.get((phase, kind), Counter())
            rows.append(
                {
                    "phase": phase,
                    "kind": kind,
                    "count": len(samples),
                    "rate": len(samples) / durations[phase] if durations[phase] else 0,
                    "p50": percentile(samples, 0.50),
                    "p95": percentile(samples, 0.95),
                    "p99": percentile(samples, 0.99),
                    "max": samples[-1] if samples else math.nan,
                    "errors": sum(errors.values()),
                    "why": ", ".join(f"{what} x{n}" for what, n in errors.most_common(3)),
                }
            )
    return rows


def print_table(rows):
    print(
        f"\n{'phase':<8}{'request':<19}{'count':>7}{'per s':>8}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}"
    )
    for row in rows:
        figures = "".join(f"{row[key] * 1000:>9.1f}" for key in ("p50", "p95", "p99", "max"))
        why = f"  ({row['why']})" if row["why"] else ""
        print(
            f"{row['phase']:<8}{row['kind']:<19}{row['count']:>7}{row['rate']:>8.1f}"
            f"{figures}{row['errors']:>8}{why}"
        )


def verdicts(rows):
    """(passed, line) for each target; the p95 targets are judged on the steady phase."""
    errors = sum(row["errors"] for row in rows)
    steady = {row["kind"]: row for row in rows if row["phase"] == "steady"}
    checkin = steady[CHECKIN]["p95"] * 1000
    pages = [(steady[kind]["p95"] * 1000, kind) for kind in PAGES if steady[kind]["count"]]
    worst, worst_kind = max(pages) if pages else (math.nan, "no page measured")
    return [
        (errors == 0, f"zero errors: {errors} errors in both phases"),
        (
            checkin < CHECKIN_P95_MS,
            f"check-in p95 < {CHECKIN_P95_MS} ms (steady): {checkin:.1f} ms",
        ),
        (
            len(pages) == len(PAGES) and worst < DASHBOARD_P95_MS,
            f"dashboard p95 < {DASHBOARD_P95_MS} ms (steady, every page): worst "
            f"{worst:.1f} ms ({worst_kind}; {len(pages)} of {len(PAGES)} pages measured)",
        ),
    ]


def run_load(port, sessions, reports, args):
    """Both phases with the coordinators browsing throughout; (recorder, durations, herd)."""
    recorder = Recorder()
    order = list(range(args.servers))
    random.Random(1).shuffle(order)
    start = time.monotonic() + 1
    herd_start = start + args.seconds * 2 / 3
    end = start + args.seconds
    rate = args.servers / args.interval

    def phase_of(moment):
        return "steady" if moment < herd_start else "herd"

    browsing = [
        threading.Thread(
            target=coordinator,
            args=(port, session, number, args, phase_of, end, recorder),
        )
        for number, session in enumerate(sessions)
    ]
    steady = steady_checkins(port, reports, order, rate, start, herd_start, recorder)
    for thread in browsing + steady:
        thread.start()
    for thread in steady:
        thread.join(timeout=end - time.monotonic() + HTTP_TIMEOUT)
    time.sleep(max(0.0, herd_start - time.monotonic()))
    herd, finished = herd_checkins(port, reports, order, end, recorder, args.herd_connections)
    for thread in herd:
        thread.start()
    for thread in herd + browsing:
        thread.join(timeout=max(0.0, end - time.monotonic()) + HTTP_TIMEOUT + args.think * 2)
    herd_seconds = (max(finished) if finished else end) - herd_start
    durations = {"steady": herd_start - start, "herd": end - herd_start}
    return recorder, durations, herd_seconds


def postgres_cpu(base_url, name):
    """CPU seconds of the PostgreSQL backends connected to `name` now (gunicorn keeps its
    connections, CONN_MAX_AGE, so they are the ones that served the run)."""
    import psycopg

    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as conn:
        pids = [
            row[0]
            for row in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [name])
        ]
    return harness.cpu_seconds(pids), len(pids)


def check_redis(url):
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"Redis at {url} does not answer: {exc}") from None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 servers, 15 s (CI)")
    parser.add_argument("--servers", type=int, help="school servers (default 5000)")
    parser.add_argument("--builds", type=int, default=50, help="published builds (50)")
    parser.add_argument("--seconds", type=float, help="both phases together (default 60)")
    parser.add_argument(
        "--interval", type=float, help="seconds between two reports of one server (default 300)"
    )
    parser.add_argument("--coordinators", type=int, default=20)
    parser.add_argument("--think", type=float, default=5, help="mean pause between pages (5 s)")
    parser.add_argument("--herd-connections", type=int, default=32)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--database", default="xo_bench_load", help="xo_bench_…: created afresh, dropped"
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    # --quick keeps the full run's aggregate rate (about 17 check-ins a second).
    quick = {"servers": 500, "seconds": 15, "interval": 30}
    full = {"servers": 5000, "seconds": 60, "interval": 300}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not harness.DB_NAME_RE.match(args.database):
        parser.error(
            "--database must start with xo_bench_ and go on with lower-case letters, digits "
            "and _ (it is dropped before and after the run)"
        )
    if args.servers < 1 or args.builds < 1 or args.coordinators < 1 or args.seconds < 3:
        parser.error("--servers, --builds and --coordinators must be at least 1, --seconds 3")
    if args.interval <= 0 or args.think <= 0 or args.herd_connections < 1:
        parser.error("--interval and --think must be positive, --herd-connections at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    data = tempfile.mkdtemp(prefix="xo-bench-load-")
    database_url = f"{args.postgres}/{args.database}"
    env = harness.portal_env(data, DATABASE_URL=database_url, CELERY_BROKER_URL=args.redis)
    web = created = None
    try:
        check_redis(args.redis)
        harness.create_database(args.postgres, args.database)
        created = True
        print(f"database {database_url} (fresh), broker {args.redis}")
        started = time.monotonic()
        seed = harness.migrate_and_seed(env, args.servers, args.builds, args.coordinators)
        print(
            f"seeded {args.servers} servers x {args.builds} builds, {args.coordinators} "
            f"coordinators in {time.monotonic() - started:.0f} s"
        )
        port = harness.free_port()
        web = harness.start_web(env, port)
        probe = Connection(port)
        cookie = {"Cookie": f"sessionid={seed['sessions'][0]}"}
        harness.wait_until(
            lambda: probe.request("GET", "/schools/client/", headers=cookie)[1] is None
        )
        probe.close()
        reports = Reports(args.servers, args.builds)
        web_pids = harness.process_tree(web.pid)
        load_before = harness.load_average()
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        web_before = harness.cpu_seconds(web_pids)
        wall = time.monotonic()
        print(
            f"running {args.seconds:g} s: steady {args.servers / args.interval:.1f} check-ins/s "
            f"then a herd of {args.servers} through {args.herd_connections} connections; "
            f"{args.coordinators} coordinators, a page every {args.think:g} s each on average",
            flush=True,
        )
        recorder, durations, herd_seconds = run_load(port, seed["sessions"], reports, args)
        wall = time.monotonic() - wall
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        web_cpu = harness.cpu_seconds(web_pids) - web_before
        db_cpu, backends = postgres_cpu(args.postgres, args.database)
        load_after = harness.load_average()

        rows = summary(recorder, durations)
        print_table(rows)
        herd = next(row for row in rows if row["phase"] == "herd" and row["kind"] == CHECKIN)
        print(
            f"\nherd: {herd['count']} of {args.servers} servers reported in {herd_seconds:.1f} s "
            f"({herd['count'] / herd_seconds if herd_seconds > 0 else 0:.0f}/s)"
        )
        lag = sorted(recorder.lag)
        generator = (cpu_after.ru_utime - cpu_before.ru_utime) + (
            cpu_after.ru_stime - cpu_before.ru_stime
        )
        print(
            f"steady schedule: p95 lag {percentile(lag, 0.95) * 1000:.1f} ms behind schedule "
            f"(how late the generator sent)"
        )
        print(
            f"CPU over {wall:.0f} s on {os.cpu_count()} cores: generator {generator:.1f} s "
            f"({generator / wall:.0%} of a core), gunicorn {web_cpu:.1f} s, PostgreSQL "
            f"{db_cpu:.1f} s ({backends} backends)"
        )
        print(f"load average before {load_before}, after {load_after}\n")
        results = verdicts(rows)
        for passed, line in results:
            print(f"{'PASS' if passed else 'FAIL'}  {line}")
        return 1 if args.strict and not all(passed for passed, _line in results) else 0
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 2
    finally:
        if web is not None:
            harness.stop(web)
        if created and not args.keep:
            try:
                harness.drop_database(args.postgres, args.database)
            except Exception as exc:
                print(f"could not drop {args.database}: {exc}", file=sys.stderr)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
