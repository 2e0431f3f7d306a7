"""The rollout funnel and the school-server pages with a national deployment's laptops, on
PostgreSQL, measured against a trivial page in the same run; and the laptop tables' size.

Run: .venv/bin/python bench/funnel.py [--laptops 1000000] [--servers 5000] [--builds 50]
                                     [--days 30] [--rounds 15]
                                     [--postgres postgres://postgres@127.0.0.1:5432]
                                     [--database xo_bench_funnel] [--funnel-cache 300]
                                     [--keep]

1. A fresh database `--database` (its name must start with xo_bench_; dropped before and
   after the run) and a throwaway PORTAL_DATA_DIR.
2. Migrate, then bench/schoolseed.py: `--servers` school servers x `--builds` published
   builds (about 90 % of the pairs held), the newest offered; its offer written to the
   audit trail a week ago, so the funnel counts days from it.
3. Laptops by raw SQL inside PostgreSQL (INSERT ... SELECT FROM generate_series, no rows
   through Python): `--laptops` laptops spread over the servers (a twentieth on no server)
   and over versions (55 % the newest build, 25 % the one before, 15 % older builds, 5 % an
   unknown hash), last seen over 40 days (so about three quarters are active), free space
   from 0 to 4 GB; a version change for a third of them; LaptopDay counts for `--days` days,
   three versions per server per day. Then VACUUM ANALYZE (after step 2 too), as
   autovacuum would soon after a bulk load: index-only scans need the visibility map.
4. gunicorn with the production command line (portal/run.py `web_command`).
5. (Also before step 3, with a gunicorn of its own: the pages' medians without laptops.)
   Median and p95 of: a trivial logged-in page, the newest build's coverage page (the
   funnel), the overview (first and a middle page) and a server's page; each divided by the
   trivial page's median. The first (cold) request of each page is printed too; the
   funnel's laptop counts are kept `--funnel-cache` seconds per worker (0: counted on every
   request, the worst case).
6. pg_total_relation_size of the laptop tables (rows, indexes, TOAST), per million laptops.

It prints figures and ratios; it asserts nothing about time (the goal, issue 13: <= 5x).
"""

import argparse
import shutil
import sys
import tempfile
import time

import harness
import schoolseed

TABLES = ("schools_laptop", "schools_laptopversionchange", "schools_laptopday")

# The newest build is index builds-1; schoolseed's contents hashes are hash{index:08d}.
LAPTOPS_SQL = """
INSERT INTO schools_laptop
    (serial, vhash, address, server_id, free_space_kib, stolen,
     first_seen_at, last_seen_at, version_since, received_at)
SELECT
    'SHC' || lpad(to_hex(n), 8, '0'),
    CASE
        WHEN n %% 20 < 11 THEN 'hash' || lpad((%(builds)s - 1)::text, 8, '0')
        WHEN n %% 20 < 16 THEN 'hash' || lpad(greatest(%(builds)s - 2, 0)::text, 8, '0')
        WHEN n %% 20 < 19 THEN 'hash' || lpad((n %% greatest(%(builds)s - 2, 1))::text, 8, '0')
        ELSE md5(n::text) || md5((n + 1)::text)
    END,
    ('10.' || (s / 250) || '.' || (s %% 250) || '.1')::inet,
    CASE WHEN n %% 20 = 7 THEN NULL ELSE %(first_server)s + s END,
    (n::bigint * 7919) %% 4000000,
    n %% 997 = 0,
    now() - interval '200 days',
    now() - ((n %% 40) || ' days')::interval - ((n %% 86400) || ' seconds')::interval,
    now() - interval '10 days',
    now()
FROM (SELECT n, n %% %(servers)s AS s FROM generate_series(1, %(laptops)s) AS n) AS numbers
"""

CHANGES_SQL = """
INSERT INTO schools_laptopversionchange (laptop_id, at, received_at, vhash, previous_vhash)
SELECT id, now() - interval '7 days', now() - interval '7 days', vhash,
       'hash' || lpad(greatest(%(builds)s - 2, 0)::text, 8, '0')
FROM schools_laptop WHERE id %% 3 = 0
"""

DAYS_SQL = """
INSERT INTO schools_laptopday (day, vhash, server_key, laptops, reports)
SELECT current_date - d,
       'hash' || lpad(greatest(%(builds)s - 1 - v, 0)::text, 8, '0'),
       %(first_server)s + s,
       greatest(1, %(per_server)s * CASE v WHEN 0 THEN 28 - least(d, 28)
                                           WHEN 1 THEN 2 + least(d, 28) ELSE 2 END / 32),
       %(per_server)s
FROM generate_series(0, %(days)s - 1) AS d,
     generate_series(0, 2) AS v,
     generate_series(0, %(servers)s - 1) AS s
"""

OFFERED_SQL = """
INSERT INTO releases_auditevent (at, build_id, action, from_status, to_status, code, params)
SELECT now() - interval '7 days', id, 'status', 'published', 'offered', '', '{}'::jsonb
FROM releases_build WHERE name = %(name)s
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laptops", type=int, default=1_000_000)
    parser.add_argument("--servers", type=int, default=5000)
    parser.add_argument("--builds", type=int, default=50)
    parser.add_argument("--days", type=int, default=30, help="days of LaptopDay counts")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="xo_bench_funnel")
    parser.add_argument(
        "--funnel-cache",
        type=int,
        default=300,
        help="LAPTOP_FUNNEL_CACHE_SECONDS for the portal (0: count on every request)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args(argv)
    if not harness.DB_NAME_RE.match(args.database):
        parser.error("--database must match xo_bench_[a-z0-9_]+ (it is dropped)")
    if min(args.laptops, args.servers, args.days, args.rounds) < 1 or args.builds < 3:
        parser.error("--laptops, --servers, --days and --rounds must be at least 1, --builds 3")
    return args


def seed_laptops(url, args) -> float:
    import psycopg

    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        first = conn.execute("SELECT min(id) FROM schools_schoolserver").fetchone()[0]
        params = {
            "builds": args.builds,
            "servers": args.servers,
            "laptops": args.laptops,
            "first_server": first,
            "days": args.days,
            "per_server": max(1, args.laptops // args.servers),
            "name": schoolseed.build_name(args.builds - 1),
        }
        for label, sql in (
            ("laptops", LAPTOPS_SQL),
            ("version changes", CHANGES_SQL),
            ("day counts", DAYS_SQL),
            ("offer", OFFERED_SQL),
        ):
            step = time.monotonic()
            rows = conn.execute(sql, params).rowcount
            print(f"  {label}: {rows} rows in {time.monotonic() - step:.0f} s", flush=True)
    vacuum(url)
    return time.monotonic() - started


def vacuum(url):
    """VACUUM ANALYZE, as autovacuum does soon after a bulk load: without it a fresh
    table's visibility map is empty and no index-only scan can skip the rows."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def sizes(url) -> dict:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {
            table: conn.execute("SELECT pg_total_relation_size(%s)", [table]).fetchone()[0]
            for table in TABLES
        }


def measure(port, cookie, pages, rounds):
    results = {}
    for label, path in pages:
        cold = harness.timed_get(port, path, cookie)
        samples = sorted(harness.timed_get(port, path, cookie) for _ in range(rounds))
        results[label] = (cold, samples[len(samples) // 2], samples[int(0.95 * (len(samples) - 1))])
    return results


def serve_and_measure(env, session, pages, rounds):
    port = harness.free_port()
    web = harness.start_web(env, port)
    harness.wait_until(lambda: harness.timed_get(port, "/schools/client/", session))
    return web, measure(port, session, pages, rounds)


def main(argv=None) -> int:
    args = parse_args(argv)
    data = tempfile.mkdtemp(prefix="xo-bench-funnel-")
    base = args.postgres.rstrip("/")
    url = f"{base}/{args.database}"
    env = harness.portal_env(
        data, DATABASE_URL=url, LAPTOP_FUNNEL_CACHE_SECONDS=str(args.funnel_cache)
    )
    web = created = None
    try:
        harness.create_database(base, args.database)
        created = True
        print(f"database {url} (fresh), LAPTOP_FUNNEL_CACHE_SECONDS={args.funnel_cache}")
        started = time.monotonic()
        session = harness.migrate_and_seed(env, args.servers, args.builds)["sessions"][0]
        vacuum(url)
        print(
            f"seeded {args.servers} servers x {args.builds} builds in "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
        newest = schoolseed.build_name(args.builds - 1)
        pages = [
            ("trivial page (/schools/client/)", "/schools/client/"),
            ("funnel (newest build's coverage)", f"/schools/builds/{newest}/"),
            ("funnel (oldest build)", f"/schools/builds/{schoolseed.build_name(0)}/"),
            ("overview", "/schools/"),
            ("overview, page 25", "/schools/?page=25"),
            ("server page", f"/schools/{schoolseed.hostname(1)}/"),
        ]
        # The same pages before any laptop exists: what the laptops add, in the same run.
        web, before = serve_and_measure(env, session, pages, args.rounds)
        harness.stop(web)
        seconds = seed_laptops(url, args)
        print(f"seeded {args.laptops} laptops in {seconds:.0f} s", flush=True)
        # A fresh gunicorn: nothing kept from the counts without laptops.
        web, results = serve_and_measure(env, session, pages, args.rounds)
        trivial = results[pages[0][0]][1]
        print(f"\n{'page':<36}{'no laptops':>11}{'cold':>10}{'median':>10}{'p95':>10}{'ratio':>8}")
        for label, (cold, median, p95) in results.items():
            print(
                f"{label:<36}{before[label][1] * 1000:>9.1f}ms{cold * 1000:>8.1f}ms"
                f"{median * 1000:>8.1f}ms{p95 * 1000:>8.1f}ms{median / trivial:>8.1f}"
            )
        table_sizes = sizes(url)
        total = sum(table_sizes.values())
        print()
        for table, size in table_sizes.items():
            print(f"{table:<32}{size / 1024**2:>10.1f} MiB")
        print(
            f"laptop tables: {total / 1024**2:.1f} MiB for {args.laptops} laptops, "
            f"{total / 1024**2 / args.laptops * 1_000_000:.0f} MiB per million laptops"
        )
        return 0
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if web is not None:
            harness.stop(web)
        if created and not args.keep:
            try:
                harness.drop_database(base, args.database)
            except Exception as exc:
                print(f"could not drop {args.database}: {exc}", file=sys.stderr)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
