"""Lines per second of `ingest_rsync_log` on a generated rsyncd log, and its SQL statements.

Run: .venv/bin/python bench/rsynclog.py [--lines 100000] [--servers 300] [--builds 12]
                                        [--rounds 3] [--against OLD_SERVICES.py]

1. A fresh PORTAL_DATA_DIR with SQLite, or the database in DATABASE_URL (use a scratch
   database: it is migrated and filled, and what the bench added is deleted at the end).
2. Seed `--servers` school servers, each with an address, and `--builds` published builds.
3. Write a log of `--lines` lines in rsyncd's own format: sessions in which a server fetches
   a build (`.contents`, `.md5`, tarball, `.name` last; some stop after the tarball), with
   rsyncd's connect and summary lines around them, files that belong to no build, hosts
   known only by address, unknown hosts, and names the portal never published.
4. Each round: empty the sync states and the servers' last report, then time the command
   twice on the same file: the first pass creates the states, the second finds them all.
   With `--against` (another schools/services.py, e.g.
   `git show REV:schools/services.py > /tmp/old_services.py`), the same two passes as the
   command ran before it read in chunks: parse every line, then one
   `rsync_transfers_record` call with all of them.
5. Print, per pass, the median lines per second, the SQL statements of the last round, and
   the median time as a multiple of the current code's in the same pass.

It asserts nothing; tests/schools/test_ingest_rsync_log.py holds the statement count flat.
"""

import argparse
import importlib.util
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

PREFIX = "xs-bench-rsync-"  # every server this bench creates; deleted at the end
BUILD_PREFIX = "bench-rsync-"


def hostname(number: int) -> str:
    return f"{PREFIX}{number:05d}.local"


def address(number: int) -> str:
    return f"10.{200 + number // 65536}.{number // 256 % 256}.{number % 256}"


def build_name(index: int) -> str:
    return f"{BUILD_PREFIX}{index:03d}"


def write_log(path: Path, *, lines: int, servers: int, builds: int, seed: int = 801) -> None:
    """`lines` lines of rsyncd log (its native format, times one second apart)."""
    rng = random.Random(seed)
    clock = 1_795_000_000  # 2026-11-18
    out = []
    pid = 1000
    while len(out) < lines:
        pid += 1
        number = rng.randrange(servers)
        roll = rng.random()
        if roll < 0.7:
            host, addr = hostname(number), address(number)
        elif roll < 0.9:
            host, addr = "UNKNOWN", address(number)  # hostname lookup failed: match by address
        else:
            host, addr = f"stranger-{rng.randrange(50)}.example", f"192.0.2.{rng.randrange(250)}"
        # A few names the portal never published (a test build, another deployment's).
        build = build_name(rng.randrange(builds)) if rng.random() < 0.9 else f"other-{pid % 7}"
        files = [f"os/{build}.contents", f"os/{build}-tree.tar.bz2.md5", f"os/{build}-tree.tar.bz2"]
        if rng.random() < 0.8:
            files.append(f"os/{build}.name")  # fetched last; missing when a transfer broke off
        if rng.random() < 0.3:
            files.insert(0, "os/README")
        session = [f"connect from {host} ({addr})", f"rsync on puppetcontent/os/ from {host}"]
        session += [
            f"send {host} [{addr}] puppetcontent () {f} {rng.randrange(1, 10**9)}" for f in files
        ]
        session.append("sent 1234600000 bytes  received 1234 bytes  total size 2469000000")
        for message in session:
            clock += 1
            stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(clock))
            out.append(f"{stamp} [{pid}] {message}\n")
    path.write_text("".join(out[:lines]))


def seed(servers: int, builds: int) -> None:
    from django.contrib.auth.models import User
    from django.utils import timezone

    from releases.models import Build, BuildStatus
    from schools.models import SchoolServer

    now = timezone.now()
    user = User.objects.create_user(f"{PREFIX}uploader")
    Build.objects.bulk_create(
        Build(name=build_name(index), compression="bz2", status=BuildStatus.PUBLISHED, size=1,
              md5=f"{index:032x}", sha256="0" * 64, contents_size=1, contents_sha256="0" * 64,
              store_dir=f"{BUILD_PREFIX}{index}", uploaded_by=user, original_filename="x",
              contents_hash=f"{BUILD_PREFIX}{index:08d}", published_at=now)
        for index in range(builds * 3 // 4)  # the others were never published here
    )  # fmt: skip
    SchoolServer.objects.bulk_create(
        SchoolServer(hostname=hostname(number), name=f"xs-{number}", school=f"Escuela {number}",
                     address=address(number))
        for number in range(servers)
    )  # fmt: skip


def unseed() -> None:
    from django.contrib.auth.models import User

    from releases.models import Build
    from schools.models import SchoolServer

    SchoolServer.objects.filter(hostname__startswith=PREFIX).delete()
    Build.objects.filter(name__startswith=BUILD_PREFIX).delete()
    User.objects.filter(username__startswith=PREFIX).delete()


def load_services(path: Path):
    """Another version of schools/services.py, as a module of the `schools` package (so its
    relative imports find this checkout's models)."""
    spec = importlib.util.spec_from_file_location("schools.bench_against_services", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def current(path: Path) -> None:
    from django.core.management import call_command

    call_command("ingest_rsync_log", str(path), stdout=io.StringIO())


def before_chunks(services):
    """The command as it was before it read in chunks, with `services`' record function."""

    def run(path: Path) -> None:
        from django.utils import timezone

        from schools.rsynclog import parse_line

        tz = timezone.get_current_timezone()
        year = timezone.localtime().year
        with open(path, "rb") as handle:
            transfers = [t for t in (parse_line(line, tz=tz, year=year) for line in handle) if t]
        services.rsync_transfers_record(transfers)

    return run


def timed(step, path: Path) -> tuple[float, int]:
    """Seconds and SQL statements of `step(path)`."""
    from django.db import connection

    statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        started = time.perf_counter()
        step(path)
        elapsed = time.perf_counter() - started
    return elapsed, statements


def reset() -> None:
    from schools.models import SchoolServer, SyncState

    servers = SchoolServer.objects.filter(hostname__startswith=PREFIX)
    SyncState.objects.filter(server__in=servers).delete()
    servers.update(last_report_at=None, last_report_source="")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--servers", type=int, default=300)
    parser.add_argument("--builds", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another schools/services.py to time")
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="xo-bench-rsync-")
    os.environ.update(harness.portal_env(data))
    database = os.environ.get("DATABASE_URL", "sqlite (embedded default)")
    if database.startswith("postgres"):
        print("Note: the bench migrates the database named in DATABASE_URL; use a scratch one.")
    print(f"database: {database}")
    import django

    django.setup()
    from django.core.management import call_command

    try:
        call_command("migrate", verbosity=0)
        unseed()  # what an interrupted run left behind
        seed(args.servers, args.builds)
        log = Path(data) / "rsyncd.log"
        write_log(log, lines=args.lines, servers=args.servers, builds=args.builds)
        print(
            f"{args.lines:,} lines ({log.stat().st_size / 2**20:.1f} MiB), "
            f"{args.servers} servers, {args.builds} builds, {args.rounds} rounds"
        )
        variants = {"current code": current}
        if args.against:
            variants[f"--against {args.against.name}"] = before_chunks(load_services(args.against))
        results = {(name, run): [] for name in variants for run in ("first", "second")}
        statements = {}
        for _round in range(args.rounds):
            for name, step in variants.items():
                reset()
                for run in ("first", "second"):
                    seconds, count = timed(step, log)
                    results[name, run].append(seconds)
                    statements[name, run] = count
        print(
            f"\n{'implementation':<34}{'pass':<8}{'lines/s':>10}{'median s':>10}{'SQL':>9}"
            f"{'x current':>11}"
        )
        for (name, run), samples in results.items():
            median = statistics.median(samples)
            # The time as a multiple of the current code's in the same pass of this run.
            ratio = median / statistics.median(results["current code", run])
            print(
                f"{name:<34}{run:<8}{args.lines / median:>10,.0f}{median:>10.2f}"
                f"{statements[name, run]:>9,}{ratio:>11.2f}"
            )
    finally:
        unseed()
        subprocess.run(["rm", "-rf", data], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
