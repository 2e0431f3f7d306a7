"""The check-in service under repetition: what a report that repeats the last one writes,
how many statements it costs, and the bounded history (bench/load.py measures the speed)."""

import json

from django.db import connection
from django.test.utils import CaptureQueriesContext

from schools import services
from schools.checkin import parse_checkin
from schools.models import CheckIn, SchoolServer, SyncState, SyncStatus


def make_server(hostname="xs-caacupe-1.local"):
    return SchoolServer.objects.create(hostname=hostname, name=hostname, school="Escuela 1")


def record(server, builds, **extra):
    body = json.dumps({"hostname": server.hostname, "builds": builds, **extra}).encode()
    return services.checkin_record(server=server, report=parse_checkin(body), body=json.loads(body))


def names(count):
    return [{"name": f"py{index:03d}-1", "verified": True} for index in range(count)]


def test_a_repeated_report_only_moves_the_times(db):
    xs = make_server()
    record(xs, names(3))
    before = {s.build_name: s for s in SyncState.objects.all()}
    record(xs, names(3))
    for state in SyncState.objects.all():
        first = before[state.build_name]
        assert (state.status, state.first_seen_at, state.held_since) == (
            first.status,
            first.first_seen_at,
            first.held_since,
        )
        assert state.last_seen_at > first.last_seen_at


def test_a_repeated_report_costs_the_same_statements_whatever_the_number_of_builds(
    db, django_assert_num_queries
):
    few, many = make_server("xs-few.local"), make_server("xs-many.local")
    record(few, names(2))
    record(many, names(40))
    with CaptureQueriesContext(connection) as baseline:
        record(few, names(2))
    with django_assert_num_queries(len(baseline.captured_queries)):
        record(many, names(40))
    # Read the states, update their times, the server, store the report, prune: no upsert.
    assert not any("INSERT INTO" in q["sql"] and "syncstate" in q["sql"] for q in baseline)


def test_only_the_build_that_changed_is_rewritten(db):
    xs = make_server()
    record(xs, [{"name": "py1"}, {"name": "py2"}])
    record(xs, [{"name": "py1"}, {"name": "py2", "verified": True}])
    statuses = dict(SyncState.objects.values_list("build_name", "status"))
    assert statuses == {"py1": SyncStatus.PRESENT, "py2": SyncStatus.VERIFIED}


def test_a_build_reported_before_it_was_published_is_linked_once_it_is(db, published):
    xs = make_server()
    record(xs, [{"name": "py801-5"}])
    assert SyncState.objects.get().build is None
    build = published("py801-5")
    record(xs, [{"name": "py801-5", "md5": "0" * 32}])
    state = SyncState.objects.get()
    assert (state.build, state.status) == (build, SyncStatus.FAILED)
    xs.refresh_from_db()
    assert "differs from the published" in xs.last_error


def test_a_build_that_comes_back_keeps_when_it_was_first_held(db):
    xs = make_server()
    record(xs, [{"name": "py1"}])
    first = SyncState.objects.get().held_since
    record(xs, [])
    assert SyncState.objects.get().status == SyncStatus.UNKNOWN
    record(xs, [{"name": "py1"}])
    state = SyncState.objects.get()
    assert (state.status, state.held_since) == (SyncStatus.PRESENT, first)


def test_the_history_keeps_the_newest_reports_of_each_server(db):
    xs, other = make_server(), make_server("xs-other.local")
    record(other, [])
    created = [record(xs, [], disk_free_bytes=index).pk for index in range(105)]
    kept = list(CheckIn.objects.filter(server=xs).order_by("pk").values_list("pk", flat=True))
    assert kept == created[5:]
    assert CheckIn.objects.filter(server=other).count() == 1
