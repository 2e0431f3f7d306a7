"""`ingest_rsync_log` on long logs: its statements grow with the chunks it reads, not with the
lines, and what it records is what applying the lines one by one gives (bench/rsynclog.py
measures the speed)."""

import random
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from schools import services
from schools.models import HELD_STATUSES, SchoolServer, SyncState, SyncStatus
from schools.rsynclog import parse_line

PUBLISHED = ["py801-1", "py801-2", "py802-1", "py803-1", "py803-2", "py804-1"]
UNPUBLISHED = ["py900-1", "test-build"]  # in the log, never published here
SERVERS = 12
START = datetime(2026, 11, 26, 1, 0, 0)  # local wall time, as rsyncd writes it


def hostname(number):
    return f"xs-{number:02d}.local"


def address(number):
    return f"10.1.2.{number + 10}"


def make_log(count, seed=10):
    """`count` lines of rsyncd log in its native format, a seeded mix: tarballs and `.name`s
    of known servers (by host name, by address when rsyncd could not resolve it, by an
    address rsyncd logged as its host), their other files, unknown hosts, received files,
    and rsyncd's connect and summary lines; a third of the servers never get one build's
    `.name`. Times run forward, a few lines a second."""
    rng = random.Random(seed)
    clock = START
    lines = []
    for _index in range(count):
        clock += timedelta(seconds=rng.choice((0, 0, 1, 2)))
        number = rng.randrange(SERVERS)
        host = rng.choices([hostname(number), "UNKNOWN", address(number)], weights=[7, 2, 1])[0]
        name = rng.choice(PUBLISHED + UNPUBLISHED)
        file = rng.choices(
            [f"{name}-tree.tar.bz2", f"{name}.name", f"{name}.contents", "README"],
            weights=[40, 35, 5, 3],
        )[0]
        if name == "py804-1" and number % 3 == 0 and file.endswith(".name"):
            file = f"{name}-tree.tar.bz2"  # these servers never finish downloading it
        kind = rng.choices(["send", "stranger", "recv", "other"], weights=[80, 8, 4, 8])[0]
        if kind == "stranger":
            host, addr = f"laptop-{rng.randrange(30)}", f"192.0.2.{rng.randrange(30)}"
        else:
            addr = address(number)
        message = {
            "send": f"send {host} [{addr}] puppetcontent () os/{file} {rng.randrange(10**9)}",
            "stranger": f"send {host} [{addr}] puppetcontent () os/{file} 8",
            "recv": f"recv {host} [{addr}] uploads () incoming/{file} 8",
            "other": rng.choice(
                [f"connect from {host} ({addr})", "sent 1234600000 bytes  received 1234 bytes"]
            ),
        }[kind]
        lines.append(f"{clock:%Y/%m/%d %H:%M:%S} [{1000 + number}] {message}\n")
    return "".join(lines)


# States and reports from before the log: a check-in verified one build and failed another,
# one server already held a build, one dropped one, and one reported after the whole log.
BEFORE_STATES = [
    (0, "py801-1", SyncStatus.VERIFIED, "a" * 32),
    (1, "py801-2", SyncStatus.FAILED, "b" * 32),
    (2, "py802-1", SyncStatus.PRESENT, ""),
    (3, "py803-1", SyncStatus.UNKNOWN, ""),
]
EARLIER = timezone.make_aware(START - timedelta(days=3))
LATER = timezone.make_aware(START + timedelta(days=30))


@pytest.fixture
def world(db, published):
    builds = {name: published(name) for name in PUBLISHED}
    for number in range(SERVERS):
        SchoolServer.objects.create(
            hostname=hostname(number), name=f"xs{number}", school="x", address=address(number)
        )

    def reset():
        """Put states and reports back as they were before the log."""
        SyncState.objects.all().delete()
        SchoolServer.objects.update(last_report_at=None, last_report_source="")
        SchoolServer.objects.filter(hostname=hostname(5)).update(
            last_report_at=LATER, last_report_source="checkin"
        )
        for number, name, status, md5 in BEFORE_STATES:
            SyncState.objects.create(
                server=SchoolServer.objects.get(hostname=hostname(number)),
                build=builds.get(name),
                build_name=name,
                status=status,
                md5=md5,
                source="checkin",
                first_seen_at=EARLIER,
                last_seen_at=EARLIER,
                held_since=EARLIER if status in HELD_STATUSES else None,
            )

    reset()
    return reset


def expected_after(log):
    """States, reports and the command's summary line from applying `log` one line at a
    time, by the rules as the per-line code wrote them: its own copy, so the test does not
    check the code against itself."""
    by_host = {hostname(n): hostname(n) for n in range(SERVERS)}
    by_address = {address(n): hostname(n) for n in range(SERVERS)}
    states = {
        (hostname(number), name): {
            "status": status,
            "md5": md5,
            "source": "checkin",
            "first_seen_at": EARLIER,
            "last_seen_at": EARLIER,
            "held_since": EARLIER if status in HELD_STATUSES else None,
        }
        for number, name, status, md5 in BEFORE_STATES
    }
    reports = {hostname(n): (None, "") for n in range(SERVERS)} | {hostname(5): (LATER, "checkin")}
    sent = recorded = unrelated = 0
    unknown = set()
    tz = timezone.get_current_timezone()
    for line in log.splitlines():
        transfer = parse_line(line, tz=tz, year=2026)
        if transfer is None or transfer.operation != "send":
            continue
        sent += 1
        host = by_host.get(transfer.host) or by_address.get(transfer.address)
        if host is None:
            unknown.add(transfer.host if transfer.host != "unknown" else transfer.address)
            continue
        if transfer.kind not in ("tarball", "name"):
            unrelated += 1
            continue
        recorded += 1
        at = transfer.at
        state = states.get((host, transfer.build_name))
        status = SyncStatus.DOWNLOADING if transfer.kind == "tarball" else SyncStatus.PRESENT
        if state and state["status"] in (SyncStatus.VERIFIED, SyncStatus.FAILED):
            status = state["status"]
        if state and state["status"] == SyncStatus.PRESENT and status == SyncStatus.DOWNLOADING:
            status = SyncStatus.PRESENT
        if state is None:
            state = states[host, transfer.build_name] = {
                "md5": "",
                "first_seen_at": at,
                "held_since": None,
            }
        state.update(status=status, source="rsync", last_seen_at=at)
        if status in HELD_STATUSES and state["held_since"] is None:
            state["held_since"] = at
        if reports[host][0] is None or reports[host][0] < at:
            reports[host] = (at, "rsync")
    summary = (
        f"{sent} transfers, {recorded} recorded, {unrelated} unrelated files, "
        f"{len(unknown)} unknown hosts: {', '.join(sorted(unknown))}"
    )
    return states, reports, summary


def recorded_states():
    states = {}
    for state in SyncState.objects.select_related("server", "build"):
        # A state is linked to its build exactly when the portal published that name.
        assert (state.build.name if state.build else None) == (
            state.build_name if state.build_name in PUBLISHED else None
        )
        states[state.server.hostname, state.build_name] = {
            "status": state.status,
            "md5": state.md5,
            "source": state.source,
            "first_seen_at": state.first_seen_at,
            "last_seen_at": state.last_seen_at,
            "held_since": state.held_since,
        }
    return states


def recorded_reports():
    return {
        server.hostname: (server.last_report_at, server.last_report_source)
        for server in SchoolServer.objects.all()
    }


def ingest(path, capsys):
    with CaptureQueriesContext(connection) as queries:
        call_command("ingest_rsync_log", str(path), "--year", "2026")
    return len(queries.captured_queries), capsys.readouterr().out.strip()


def test_it_costs_statements_per_chunk_not_per_line(world, tmp_path, capsys):
    path = tmp_path / "rsyncd.log"
    path.write_text(make_log(1_000))
    one_chunk, _summary = ingest(path, capsys)
    world()
    log = make_log(100_000)
    path.write_text(log)
    statements, summary = ingest(path, capsys)
    # A chunk costs the same statements however many lines it holds: a savepoint, the
    # servers, the builds, the states of the pairs it names, one upsert (these 12 servers
    # x 8 names fit in one batch) and one UPDATE of the servers' last report. 100,000 lines
    # are 20 chunks of 5,000, so at most 20 times the one chunk of 1,000 lines; applying
    # the lines one at a time took about four statements a line.
    assert one_chunk <= 8
    assert statements <= 100_000 // services.LOG_CHUNK_LINES * one_chunk
    states, reports, expected_summary = expected_after(log)
    assert summary == expected_summary
    assert recorded_states() == states
    assert recorded_reports() == reports


@pytest.mark.parametrize("chunk_lines", [1, 7, 5000])
def test_it_records_the_same_whatever_the_chunk_size(world, chunk_lines):
    """A chunk of one line is the old way, one line at a time; 7 splits many pairs' lines
    between chunks."""
    log = make_log(600, seed=chunk_lines)
    services.rsync_log_record(
        lines=log.splitlines(),
        tz=timezone.get_current_timezone(),
        year=2026,
        chunk_lines=chunk_lines,
    )
    states, reports, _summary = expected_after(log)
    assert recorded_states() == states
    assert recorded_reports() == reports


# --- The rules, by hand -----------------------------------------------------------------------


def line(seconds, file, host="xs-00.local"):
    at = START + timedelta(seconds=seconds)
    return f"{at:%Y/%m/%d %H:%M:%S} [7] send {host} [10.1.2.10] puppetcontent () os/{file} 8"


def record(*lines, chunk_lines=services.LOG_CHUNK_LINES):
    return services.rsync_log_record(
        lines=lines, tz=timezone.get_current_timezone(), year=2026, chunk_lines=chunk_lines
    )


def at(seconds):
    return timezone.make_aware(START + timedelta(seconds=seconds))


@pytest.fixture
def xs(db):
    return SchoolServer.objects.create(hostname="xs-00.local", name="xs", school="x")


@pytest.mark.parametrize("chunk_lines", [1, 5000])
def test_a_tarball_sent_again_after_the_name_keeps_the_build_present(xs, chunk_lines):
    record(
        line(0, "py801-1-tree.tar.bz2"),
        line(5, "py801-1.name"),
        line(9, "py801-1-tree.tar.bz2"),
        chunk_lines=chunk_lines,
    )
    state = SyncState.objects.get()
    assert (state.status, state.first_seen_at, state.held_since, state.last_seen_at) == (
        SyncStatus.PRESENT,
        at(0),
        at(5),
        at(9),
    )


@pytest.mark.parametrize("status", [SyncStatus.VERIFIED, SyncStatus.FAILED])
def test_a_log_line_keeps_what_a_check_in_said_but_notes_the_line(xs, status):
    SyncState.objects.create(
        server=xs, build_name="py801-1", status=status, md5="c" * 32, first_seen_at=at(-60)
    )
    record(line(0, "py801-1-tree.tar.bz2"), line(1, "py801-1.name"))
    state = SyncState.objects.get()
    assert (state.status, state.md5, state.source) == (status, "c" * 32, "rsync")
    assert (state.first_seen_at, state.last_seen_at) == (at(-60), at(1))


def test_a_log_line_never_moves_the_last_report_back(xs):
    SchoolServer.objects.filter(pk=xs.pk).update(last_report_at=at(60), last_report_source="x")
    record(line(0, "py801-1.name"), line(120, "py802-1.name"), line(30, "py803-1.name"))
    xs.refresh_from_db()
    assert (xs.last_report_at, xs.last_report_source) == (at(120), "rsync")
    record(line(90, "py801-1.name"))
    xs.refresh_from_db()
    assert xs.last_report_at == at(120)


def test_reading_the_same_lines_again_writes_nothing(xs):
    lines = [line(0, "py801-1-tree.tar.bz2"), line(5, "py801-1.name")]
    record(*lines)
    with CaptureQueriesContext(connection) as queries:
        record(*lines)
    sql = [query["sql"] for query in queries.captured_queries]
    assert not [q for q in sql if q.startswith(("INSERT", "UPDATE"))], sql


def test_lines_of_unknown_hosts_or_other_files_cost_no_state_query(xs):
    with CaptureQueriesContext(connection) as queries:
        counts = record(line(0, "README"), line(1, "py801-1.name", host="stranger.example"))
    assert (counts.unrelated, counts.unknown_hosts, counts.recorded) == (1, {"stranger.example"}, 0)
    assert not [q for q in queries.captured_queries if "syncstate" in q["sql"]]
