import io
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from releases import offers
from releases.audit import AuditAction
from releases.models import AuditEvent
from schools import selectors, services
from schools.models import SchoolServer, SyncState, SyncStatus
from schools.rsynclog import parse_line

TZ = ZoneInfo("America/Asuncion")

CSV = """hostname,name,school,department,contact,address,active,notes
xs-caacupe-1.local,xs1,Escuela 1,Cordillera,Ana,10.1.2.3,yes,
xs-caacupe-2.local,,Escuela 2,Cordillera,,,no,cerrada por obras
bad host!,x,Escuela 3,Central,,,yes,
xs-luque-1.local,,,Central,,,yes,
xs-luque-2.local,,Escuela 5,Central,,not-an-ip,yes,
xs-luque-3.local,,Escuela 6,Central,,,maybe,
xs-caacupe-1.local,dup,Escuela 1 bis,Cordillera,,,yes,
"""


def server(hostname, **fields):
    fields.setdefault("school", hostname)
    return SchoolServer.objects.create(hostname=hostname, name=hostname.split(".")[0], **fields)


# --- CSV --------------------------------------------------------------------------------------


def test_the_csv_import_creates_good_lines_and_reports_bad_ones_by_number(db):
    result = services.servers_import_csv(text=CSV)
    assert (result.created, result.updated) == (2, 0)
    assert [line for line, _message in result.errors] == [4, 5, 6, 7, 8]
    first = SchoolServer.objects.get(hostname="xs-caacupe-1.local")
    assert (first.name, first.address, first.active) == ("xs1", "10.1.2.3", True)
    assert SchoolServer.objects.get(hostname="xs-caacupe-2.local").active is False


def test_the_csv_import_updates_by_hostname(db):
    server("xs-caacupe-1.local", school="Old name")
    result = services.servers_import_csv(text="hostname,school\nXS-CAACUPE-1.local,New name\n")
    assert (result.created, result.updated, result.errors) == (0, 1, [])
    assert SchoolServer.objects.get().school == "New name"


def test_the_csv_import_needs_the_required_columns(db):
    result = services.servers_import_csv(text="host,escuela\nx,y\n")
    assert result.errors == [(1, "missing columns: hostname, school")]
    assert not SchoolServer.objects.exists()


def test_the_import_command_prints_each_bad_line_and_exits_non_zero(db, tmp_path, capsys):
    path = tmp_path / "servers.csv"
    path.write_text(CSV)
    with pytest.raises(CommandError) as caught:
        call_command("import_school_servers", str(path))
    assert caught.value.returncode == 2
    err = capsys.readouterr().err
    assert f"{path}:4: hostname 'bad host!' is not a host name" in err
    assert SchoolServer.objects.count() == 2


def test_the_import_command_keeps_what_the_file_has_no_column_for(db, tmp_path, capsys):
    server("xs-caacupe-1.local", contact="Ana", notes="cerrada por obras", active=False)
    path = tmp_path / "servers.csv"
    path.write_text("hostname,school\nxs-caacupe-1.local,Escuela 1\nxs-luque-1.local,Luque\n")

    call_command("import_school_servers", str(path))

    assert capsys.readouterr().out == "1 created, 1 updated, 0 lines refused.\n"
    kept = SchoolServer.objects.get(hostname="xs-caacupe-1.local")
    assert (kept.school, kept.contact, kept.notes, kept.active) == (
        "Escuela 1",
        "Ana",
        "cerrada por obras",
        False,
    )
    assert SchoolServer.objects.get(hostname="xs-luque-1.local").active is True


def test_the_import_command_keeps_the_line_breaks_of_a_quoted_note(db, tmp_path):
    # A note typed in a textarea has "\r\n"; the export quotes it, the import keeps it.
    server("xs-caacupe-1.local", school="Escuela 1", notes="una\r\nnota")
    path = tmp_path / "servers.csv"
    path.write_bytes(b'hostname,school,notes\r\nxs-caacupe-1.local,Escuela 1,"una\r\nnota"\r\n')

    call_command("import_school_servers", str(path), stdout=io.StringIO())

    assert SchoolServer.objects.get().notes == "una\r\nnota"
    assert not AuditEvent.objects.exists()


def test_the_import_command_fails_when_another_import_added_a_server_meanwhile(
    db, tmp_path, monkeypatch
):
    path = tmp_path / "servers.csv"
    path.write_text("hostname,school\nxs-caacupe-1.local,Escuela 1\n")
    stored_values = services._stored_values

    def then_another_import_inserts(hostnames, **kwargs):
        values = stored_values(hostnames, **kwargs)
        server("xs-caacupe-1.local")
        return values

    monkeypatch.setattr(services, "_stored_values", then_another_import_inserts)

    with pytest.raises(CommandError) as caught:
        call_command("import_school_servers", str(path))

    assert "Another import added some of these servers" in str(caught.value)
    assert not AuditEvent.objects.exists()


def test_school_token_prints_a_token_that_works_and_revokes_the_old_one(db, capsys):
    xs = server("xs-caacupe-1.local")
    call_command("school_token", "xs-caacupe-1.local")
    first = capsys.readouterr().out.strip()
    assert SchoolServer.objects.by_token(first) == xs
    call_command("school_token", "xs-caacupe-1.local")
    second = capsys.readouterr().out.strip()
    assert SchoolServer.objects.by_token(first) is None
    assert SchoolServer.objects.by_token(second) == xs
    assert first not in SchoolServer.objects.get().token_hash


def test_the_csv_import_is_audited_as_one_event_with_its_counts(db, cast):
    server("xs-caacupe-2.local", active=True)
    server("xs-caacupe-1.local", active=False)
    services.servers_import_csv(text=CSV, acting_user=cast.root)
    [event] = AuditEvent.objects.filter(action=AuditAction.SERVERS_IMPORT)
    assert (event.actor, event.build, event.code) == (cast.root, None, "servers_imported")
    assert event.params == {
        "created": 0,
        "updated": 2,
        "refused": 5,
        "activated": 1,
        "deactivated": 1,
        "active_changes": {
            "xs-caacupe-1.local": [False, True],
            "xs-caacupe-2.local": [True, False],
        },
    }


def test_a_csv_import_that_changes_nothing_is_not_audited(db):
    services.servers_import_csv(text="hostname,school\nbad host!,x\n")
    services.servers_import_csv(text="host,escuela\nx,y\n")
    assert not AuditEvent.objects.exists()
    services.servers_import_csv(text=CSV)
    result = services.servers_import_csv(text=CSV)
    assert (result.created, result.updated) == (0, 2)
    assert AuditEvent.objects.count() == 1


def test_an_address_written_another_way_is_the_same_address(db):
    """An IPv6 address is kept as the database writes it; the same address in capitals or
    uncompressed is no change, import after import."""
    services.servers_import_csv(text="hostname,school,address\nxs-6.local,E6,2001:DB8:0::1\n")
    assert SchoolServer.objects.get().address == "2001:db8::1"
    plan = services.servers_import_plan(
        text="hostname,school,address\nxs-6.local,E6,2001:0db8:0000::0001\n"
    )
    assert (len(plan.changed), len(plan.unchanged)) == (0, 1)


def test_the_import_command_audits_who_ran_it(db, cast, tmp_path):
    path = tmp_path / "servers.csv"
    path.write_text("hostname,school\nxs-caacupe-1.local,Escuela 1\n")
    call_command("import_school_servers", str(path), "--by", "root")
    event = AuditEvent.objects.get(action=AuditAction.SERVERS_IMPORT)
    assert (event.actor, event.params["created"]) == (cast.root, 1)


def test_a_new_token_is_audited_without_the_token(db, cast):
    xs = server("xs-caacupe-1.local")
    key = services.server_token_rotate(server=xs, acting_user=cast.root)
    [event] = AuditEvent.objects.filter(action=AuditAction.TOKEN_ROTATION)
    assert (event.actor, event.code) == (cast.root, "server_token_rotated")
    assert event.params == {"server": "xs-caacupe-1.local", "prefix": key[:8]}
    assert key not in str(event.params)


def test_school_token_audits_who_ran_it_or_nobody(db, cast):
    server("xs-caacupe-1.local")
    call_command("school_token", "xs-caacupe-1.local", "--by", "root", stdout=io.StringIO())
    call_command("school_token", "XS-Caacupe-1.local", stdout=io.StringIO())
    events = AuditEvent.objects.filter(action=AuditAction.TOKEN_ROTATION).order_by("pk")
    assert [event.actor for event in events] == [cast.root, None]


def test_school_token_names_an_unknown_user(db):
    server("xs-caacupe-1.local")
    with pytest.raises(CommandError, match="mallory"):
        call_command("school_token", "xs-caacupe-1.local", "--by", "mallory")
    assert not SchoolServer.objects.get().token_hash


def test_school_token_names_an_unknown_host(db):
    with pytest.raises(CommandError, match="xs-nope"):
        call_command("school_token", "xs-nope.local")


# --- rsyncd log -------------------------------------------------------------------------------

LOG = """\
2026/11/26 03:00:01 [12345] connect from xs-caacupe-1.local (10.1.2.3)
2026/11/26 03:00:01 [12345] rsync on puppetcontent/os/ from xs-caacupe-1.local (10.1.2.3)
2026/11/26 03:02:11 [12345] send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/py801-2-tree.tar.bz2 1234567890
2026/11/26 03:02:11 [12345] send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/py801-2.name 8
2026/11/26 03:02:12 [12345] sent 1234600000 bytes  received 1234 bytes  total size 2469000000
2026/11/26 03:05:00 [12399] send UNKNOWN [10.9.9.9] puppetcontent () os/py801-2-tree.tar.bz2 1234567890
2026/11/26 03:06:00 [12400] send UNKNOWN [10.1.2.4] puppetcontent () os/py801-2-tree.tar.bz2 1234567890
2026/11/26 03:07:00 [12401] send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/README 10
"""


def transfers(text):
    return [t for t in (parse_line(line, tz=TZ) for line in text.splitlines()) if t]


def test_log_lines_record_downloads_by_hostname_and_by_address(db, published):
    build = published("py801-2")
    one = server("xs-caacupe-1.local")
    two = server("xs-caacupe-2.local", address="10.1.2.4")
    counts = services.rsync_transfers_record(transfers(LOG))
    assert counts.unknown_hosts == {"10.9.9.9"}
    assert counts.unrelated == 1
    assert SyncState.objects.get(server=one).status == SyncStatus.PRESENT  # .name came last
    state = SyncState.objects.get(server=two)
    assert (state.status, state.build) == (SyncStatus.DOWNLOADING, build)
    one.refresh_from_db()
    assert one.last_report_source == "rsync"


def test_a_log_line_never_downgrades_a_verified_build(db):
    xs = server("xs-caacupe-1.local")
    SyncState.objects.create(server=xs, build_name="py801-2", status=SyncStatus.VERIFIED)
    services.rsync_transfers_record(transfers(LOG))
    assert SyncState.objects.get(server=xs).status == SyncStatus.VERIFIED


def test_the_ingest_command_reads_a_file_twice_without_harm(db, tmp_path, capsys):
    xs = server("xs-caacupe-1.local")
    path = tmp_path / "rsyncd.log"
    path.write_text(LOG)
    call_command("ingest_rsync_log", str(path))
    call_command("ingest_rsync_log", str(path))
    assert "unknown hosts: 10.1.2.4, 10.9.9.9" in capsys.readouterr().out
    assert SyncState.objects.filter(server=xs).count() == 1


def test_following_the_log_continues_where_it_stopped(db, tmp_path, settings):
    xs = server("xs-caacupe-1.local")
    path = tmp_path / "rsyncd.log"
    lines = LOG.splitlines(keepends=True)
    path.write_text("".join(lines[:3]))
    settings.RSYNCD_LOG = str(path)
    assert services.rsync_log_follow() == 1
    assert SyncState.objects.get(server=xs).status == SyncStatus.DOWNLOADING
    with open(path, "a") as log:
        log.write(lines[3])
    assert services.rsync_log_follow() == 1
    assert SyncState.objects.get(server=xs).status == SyncStatus.PRESENT
    assert services.rsync_log_follow() == 0


# --- States and coverage ----------------------------------------------------------------------


def test_silent_and_lost_follow_the_thresholds(db, settings):
    now = timezone.now()
    settings.SCHOOL_SILENT_AFTER = 36 * 3600
    settings.SCHOOL_LOST_AFTER = 7 * 86400
    server("fresh.local", last_report_at=now - timedelta(hours=35))
    server("silent.local", last_report_at=now - timedelta(hours=37))
    server("lost.local", last_report_at=now - timedelta(days=8))
    server("never.local")
    server("off.local", active=False, last_report_at=now)
    states = dict(selectors.servers_with_state(now=now).values_list("hostname", "state"))
    assert states == {
        "fresh.local": "up_to_date",
        "silent.local": "silent",
        "lost.local": "lost",
        "never.local": "never",
        "off.local": "inactive",
    }


def test_a_server_without_the_newest_offered_build_is_behind(db, cast, published):
    build = published("py900-1")
    offers.build_promote(build=build, acting_user=cast.carol, reason="x")
    now = timezone.now()
    has = server("has.local", last_report_at=now)
    server("lacks.local", last_report_at=now)
    SyncState.objects.create(server=has, build=build, build_name=build.name, status="verified")
    states = dict(
        selectors.servers_with_state(now=now, newest=selectors.newest_offered_build()).values_list(
            "hostname", "state"
        )
    )
    assert states == {"has.local": "up_to_date", "lacks.local": "behind"}


def test_coverage_counts_active_servers_holding_the_build(db, published):
    build = published("py901-1")
    now = timezone.now()
    holding = server("a.local", last_report_at=now)
    server("b.local", last_report_at=now)
    server("c.local", last_report_at=now)
    gone = server("d.local", active=False, last_report_at=now)
    for xs in (holding, gone):
        SyncState.objects.create(server=xs, build=build, build_name=build.name, status="present")
    coverage = selectors.build_coverage(build)
    assert (coverage.active_servers, coverage.holding, coverage.missing_count) == (3, 1, 2)
    assert coverage.share == pytest.approx(1 / 3)
    assert [s.hostname for s in coverage.missing] == ["b.local", "c.local"]


def test_coverage_is_unknown_until_a_server_reports(db, published):
    server("a.local")
    assert selectors.build_coverage(published()).share is None


def test_the_promotion_gate_passes_without_a_reason_once_coverage_is_enough(
    db, cast, published, settings
):
    settings.PROMOTION_MIN_COVERAGE = 0.5
    build = published("py902-1")
    xs = server("a.local", last_report_at=timezone.now())
    SyncState.objects.create(server=xs, build=build, build_name=build.name, status="verified")
    offers.build_promote(build=build, acting_user=cast.carol)
    assert build.offers.get().coverage == 1.0


def test_the_coverage_series_counts_as_a_comparison_per_moment_would(db, published):
    build = published("py904-1")
    start = build.published_at

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        offsets=st.lists(
            # Seconds after publication: on the chart's moments (every 3,600 s here) and
            # between them, before the publication and after now (a clock set ahead).
            st.one_of(
                st.integers(-2, 12).map(lambda hour: hour * 3600),
                st.integers(-7200, 12 * 3600),
                st.integers(-7200, 12 * 3600).map(lambda second: second + 0.000001),
            ),
            max_size=12,
        ),
        inactive=st.sets(st.integers(0, 11), max_size=3),
        points=st.integers(2, 12),
    )
    def check(offsets, inactive, points):
        SchoolServer.objects.all().delete()  # and their sync states
        for index, offset in enumerate(offsets):
            xs = server(f"p{index}.local", active=index not in inactive)
            SyncState.objects.create(
                server=xs,
                build=build,
                build_name=build.name,
                status="present",
                held_since=start + timedelta(seconds=offset),
            )
        server("never.local")  # active, holding nothing
        now = start + timedelta(hours=points - 1)
        series = selectors.coverage_series(build, now=now, points=points)
        held = [
            start + timedelta(seconds=offset)
            for index, offset in enumerate(offsets)
            if index not in inactive
        ]
        assert [at for at, _share in series] == [
            start + timedelta(hours=point) for point in range(points)
        ]
        assert [share for _at, share in series] == [
            sum(1 for moment in held if moment <= at) / (len(held) + 1) for at, _share in series
        ]

    check()


def test_the_coverage_series_rises_when_servers_get_the_build(db, published):
    build = published("py903-1")
    start = build.published_at
    for index in range(4):
        xs = server(f"s{index}.local")
        if index < 2:
            SyncState.objects.create(
                server=xs,
                build=build,
                build_name=build.name,
                status="present",
                held_since=start + timedelta(hours=index + 1),
            )
    series = selectors.coverage_series(build, now=start + timedelta(hours=10), points=11)
    assert [share for _at, share in series][:4] == [0, 0.25, 0.5, 0.5]
    assert series[-1][1] == 0.5
