"""schools.services.laptop_reports_record: what the portal keeps of laptops' reports."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from schools import selectors, services
from schools.laptop_reports import Report
from schools.models import Laptop, LaptopDay, LaptopVersionChange, SchoolServer

V1, V2, V3 = "1" * 64, "2" * 64, "3" * 64
# Noon in Asunción (UTC-3): the same local day whatever the hour offsets below.
NOON = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


def report(serial="SHC20000001", at=NOON, vhash=V1, address="10.0.0.1", **extra):
    values = {"free_space_kib": 1000, "stolen": False}
    return Report(serial=serial, connected_at=at, address=address, vhash=vhash, **(values | extra))


def record(*reports):
    return services.laptop_reports_record(reports=list(reports))


@pytest.fixture
def server(db):
    return SchoolServer.objects.create(hostname="xs-1.local", school="E1", address="10.0.0.1")


def test_the_reporters_group_is_made_by_a_migration(db):
    assert Group.objects.filter(name="reporters").exists()


def test_it_keeps_one_row_per_laptop_with_its_latest_state(server):
    record(report(), report(at=NOON + timedelta(hours=1), free_space_kib=5, stolen=True))

    laptop = Laptop.objects.get()
    assert (laptop.vhash, laptop.server, laptop.free_space_kib, laptop.stolen) == (
        V1,
        server,
        5,
        True,
    )
    assert (laptop.first_seen_at, laptop.last_seen_at) == (NOON, NOON + timedelta(hours=1))
    assert laptop.version_since == NOON


def test_a_repeat_or_an_older_report_changes_nothing(server):
    record(report(at=NOON))
    before = list(Laptop.objects.values())

    result = record(report(at=NOON, vhash=V2), report(at=NOON - timedelta(days=1), vhash=V3))

    assert (result.stored, result.repeats) == (0, 2)
    assert list(Laptop.objects.values()) == before
    assert not LaptopVersionChange.objects.exists()
    assert LaptopDay.objects.get().reports == 1


def test_a_batch_is_applied_in_time_order_whatever_its_order(server):
    record(report(at=NOON + timedelta(hours=2), vhash=V2), report(at=NOON, vhash=V1))

    laptop = Laptop.objects.get()
    assert (laptop.vhash, laptop.last_seen_at) == (V2, NOON + timedelta(hours=2))
    assert list(LaptopVersionChange.objects.values_list("previous_vhash", "vhash")) == [(V1, V2)]


def test_a_laptop_changing_version_twice_keeps_both_moments(server):
    record(report(at=NOON, vhash=V1))
    record(report(at=NOON + timedelta(days=1), vhash=V2))
    record(report(at=NOON + timedelta(days=2), vhash=V2))
    record(report(at=NOON + timedelta(days=3), vhash=V3))

    changes = LaptopVersionChange.objects.order_by("at").values_list(
        "at", "previous_vhash", "vhash"
    )
    assert list(changes) == [
        (NOON + timedelta(days=1), V1, V2),
        (NOON + timedelta(days=3), V2, V3),
    ]
    assert Laptop.objects.get().version_since == NOON + timedelta(days=3)


def test_the_history_keeps_the_newest_changes_only(server):
    versions = [f"{n:x}" * 64 for n in range(14)]
    record(*(report(at=NOON + timedelta(hours=n), vhash=v) for n, v in enumerate(versions)))

    kept = list(LaptopVersionChange.objects.order_by("at").values_list("vhash", flat=True))
    assert kept == versions[-services.LAPTOP_HISTORY :]


def test_a_report_without_a_version_keeps_the_one_known(server):
    record(report(at=NOON, vhash=V1), report(at=NOON + timedelta(hours=1), vhash=""))

    assert Laptop.objects.get().vhash == V1
    assert not LaptopVersionChange.objects.exists()


def test_an_unknown_vhash_is_kept_and_read_as_an_unknown_version(server, published):
    build = published("py801-2", contents_hash=V1)
    record(report(serial="SHC1", vhash=V1), report(serial="SHC2", vhash=V2))

    vhashes = dict(Laptop.objects.values_list("serial", "vhash"))
    builds = selectors.builds_by_vhash(vhashes.values())
    assert builds == {V1: build}
    assert vhashes["SHC2"] == V2 and V2 not in builds


def test_an_address_matching_no_server_is_kept_and_can_be_matched_later(server):
    record(report(address="192.0.2.7"))

    laptop = Laptop.objects.get()
    assert (laptop.address, laptop.server) == ("192.0.2.7", None)
    assert LaptopDay.objects.get().server_key == 0

    services.server_update(server=server, acting_user=None, changes={"address": "192.0.2.7"})

    laptop.refresh_from_db()
    assert laptop.server == server


def test_a_server_added_later_gets_the_laptops_already_at_its_address(db):
    record(report(address="192.0.2.9"))

    server = services.server_add(
        server=SchoolServer(hostname="xs-9.local", school="E9", address="192.0.2.9"),
        acting_user=None,
    )

    assert Laptop.objects.get().server == server


def test_daily_counts_count_laptops_once_a_day_and_every_report(server):
    record(
        report(serial="SHC1", at=NOON),
        report(serial="SHC1", at=NOON + timedelta(hours=1)),
        report(serial="SHC2", at=NOON, address="192.0.2.7"),
    )
    record(report(serial="SHC1", at=NOON + timedelta(days=1)))
    record(report(serial="SHC3", at=NOON + timedelta(days=1), vhash=V2))

    counts = LaptopDay.objects.order_by("day", "vhash", "server_key").values_list(
        "day", "vhash", "server_key", "laptops", "reports"
    )
    assert list(counts) == [
        (date(2026, 11, 28), V1, 0, 1, 1),
        (date(2026, 11, 28), V1, server.pk, 1, 2),
        (date(2026, 11, 29), V1, server.pk, 1, 1),
        (date(2026, 11, 29), V2, server.pk, 1, 1),
    ]


def test_the_day_is_the_portals_local_day(server):
    # 01:00 UTC on the 29th is still the 28th in Asunción.
    record(report(at=datetime(2026, 11, 29, 1, 0, tzinfo=UTC)))
    assert LaptopDay.objects.get().day == date(2026, 11, 28)


def _batch(count, start, *, vhash=V1):
    return [
        report(serial=f"SHC{n:08d}", at=start, vhash=vhash, address=f"10.0.{n % 4}.1")
        for n in range(count)
    ]


def _statements(reports) -> int:
    with CaptureQueriesContext(connection) as queries:
        services.laptop_reports_record(reports=reports)
    return len(queries)


def test_a_batch_costs_the_same_few_statements_whatever_its_size(server):
    """New laptops, then the same laptops again with a new version (changes and pruning)."""
    small_new = _statements(_batch(5, NOON))
    small_changed = _statements(_batch(5, NOON + timedelta(days=1), vhash=V2))
    Laptop.objects.all().delete()

    big_new = _statements(_batch(500, NOON))
    big_changed = _statements(_batch(500, NOON + timedelta(days=1), vhash=V2))

    assert (big_new, big_changed) == (small_new, small_changed)
    assert (big_new, big_changed) == (7, 9), (big_new, big_changed)
    assert LaptopVersionChange.objects.count() == 500
    assert Laptop.objects.filter(vhash=V2, server=server).count() == 125


def test_an_imported_server_address_takes_the_laptops_reporting_from_it(cast):
    record(report(address="10.9.9.9"))
    assert Laptop.objects.get().server is None

    services.servers_import_csv(
        text="hostname,school,address\nxs-9.local,E9,10.9.9.9\n", acting_user=cast.dave
    )

    assert Laptop.objects.get().server.hostname == "xs-9.local"
    services.servers_import_csv(
        text="hostname,school,address\nxs-9.local,E9,10.9.9.8\n", acting_user=cast.dave
    )
    assert Laptop.objects.get().server is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("later", [0, 5], ids=["a retried report", "two reports"])
def test_two_requests_with_a_new_laptops_first_reports_count_it_once(monkeypatch, later):
    """Two relays post a new laptop's first reports at the same moment (the same report
    retried, or two of its reports): however their transactions interleave, it is one
    laptop on that day."""
    import contextlib
    import threading

    SchoolServer.objects.create(hostname="xs-1.local", school="E1", address="10.0.0.1")
    barrier = threading.Barrier(2)
    servers_at = services._servers_at

    def after_reading(addresses):
        # Both requests have read the laptops they name; let them go on together. One that
        # cannot have read yet (it waits for the other's claim) breaks the barrier instead.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=2)
        return servers_at(addresses)

    monkeypatch.setattr(services, "_servers_at", after_reading)
    errors = []

    def run(at):
        try:
            record(report(at=at, vhash=V1))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(NOON + timedelta(minutes=minutes),))
        for minutes in (0, later)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    day = LaptopDay.objects.get()
    laptop = Laptop.objects.get()
    assert day.laptops == 1
    assert laptop.last_seen_at == NOON + timedelta(minutes=later)
    if later:
        # Applied in time order, both count; the later one first, the earlier one is older
        # than what is stored and dropped (the rule for late reports).
        assert (day.reports, laptop.first_seen_at) in ((2, NOON), (1, laptop.last_seen_at))
    else:
        assert day.reports == 1  # the retry is a repeat
