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
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import harness
import schoolseed


def measure_pages(port, cookie, pages, rounds):
    results = {}
    for label, path in pages:
        harness.timed_get(port, path, cookie)  # warm up
        samples = sorted(harness.timed_get(port, path, cookie) for _ in range(rounds))
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
                    "hostname": schoolseed.hostname(index % len(keys)),
                    "builds": [{"name": schoolseed.build_name(0), "verified": False}],
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
    env = harness.portal_env(data)
    database = env.get("DATABASE_URL", "sqlite (embedded default)")
    if env.get("DATABASE_URL", "").startswith("postgres"):
        print(
            "Note: the bench migrates and seeds the database named in DATABASE_URL; use a "
            "scratch database."
        )
    print(f"database: {database}")
    started = time.monotonic()
    session = harness.migrate_and_seed(env, args.servers, args.builds)["sessions"][0]
    print(
        f"seeded {args.servers} servers x {args.builds} builds in "
        f"{time.monotonic() - started:.0f} s"
    )
    keys = [schoolseed.token(number) for number in range(args.servers)]

    port = harness.free_port()
    web = harness.start_web(env, port)
    try:
        harness.wait_until(lambda: harness.timed_get(port, "/schools/client/", session))
        pages = [
            ("trivial page (/schools/client/)", "/schools/client/"),
            ("overview", "/schools/"),
            ("overview, filtered", "/schools/?state=behind&department=Departamento+3&q=xs"),
            ("overview, last page", f"/schools/?page={harness.overview_pages(args.servers)}"),
            ("build coverage", f"/schools/builds/{schoolseed.build_name(0)}/"),
            ("server page", f"/schools/{schoolseed.hostname(0)}/"),
        ]
        results = measure_pages(port, session, pages, args.rounds)
        base = results[pages[0][0]][0]
        print(f"\n{'page':<34}{'median':>10}{'p95':>10}{'ratio':>8}")
        for label, (median, p95) in results.items():
            print(f"{label:<34}{median * 1000:>8.1f}ms{p95 * 1000:>8.1f}ms{median / base:>8.1f}")

        load = checkin_load(port, keys, args.seconds)
        print(
            f"\ncheck-ins through gunicorn: {load['requests']} in {args.seconds:g} s, "
            f"{load['rps']:.0f}/s, p50 {load['p50'] * 1000:.1f} ms, "
            f"p95 {load['p95'] * 1000:.1f} ms, errors {load['errors']} {load['error_sample']}"
        )
    finally:
        harness.stop(web)
        subprocess.run(["rm", "-rf", data], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
