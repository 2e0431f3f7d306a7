"""schools.laptop_reports: the parser of laptops' reports, tested like a library."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from schools.laptop_reports import (
    MAX_FORM_BYTES,
    Report,
    ReportInvalid,
    parse_batch,
    parse_form,
    read_csv,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
VHASH = "0123456789abcdef" * 4


def test_it_reads_inventarios_form_with_a_time_without_offset_as_utc():
    body = (
        b"laptop=shc20000001&connected_at=2013-01-28T21%3A52%3A31.822307&ip_address=10.0.0.1"
        b"&free_space=123&stolen=true&vhash=" + VHASH.encode()
    )

    assert parse_form(body, now=NOW) == Report(
        serial="SHC20000001",
        connected_at=datetime(2013, 1, 28, 21, 52, 31, 822307, tzinfo=UTC),
        address="10.0.0.1",
        free_space_kib=123,
        stolen=True,
        vhash=VHASH,
    )


def test_a_time_with_an_offset_is_converted_to_utc():
    report = parse_form(b"laptop=SHC1&connected_at=2013-01-28T18:52:31-03:00", now=NOW)
    assert report.connected_at == datetime(2013, 1, 28, 21, 52, 31, tzinfo=UTC)


def test_only_laptop_and_connected_at_are_required():
    report = parse_form(b"laptop=SHC1&connected_at=2013-01-28&vhash=&ip_address=", now=NOW)
    assert (report.address, report.free_space_kib, report.stolen, report.vhash) == (
        None,
        None,
        False,
        "",
    )


def test_an_ipv6_address_is_kept_in_its_short_form():
    report = parse_form(b"laptop=SHC1&connected_at=2013-01-28&ip_address=2001:DB8:0::1", now=NOW)
    assert report.address == "2001:db8::1"


def test_a_little_clock_skew_is_allowed_but_not_more():
    soon = (NOW + timedelta(minutes=30)).isoformat().encode()
    later = (NOW + timedelta(hours=2)).isoformat().encode()

    assert parse_form(b"laptop=SHC1&connected_at=" + soon.replace(b"+", b"%2B"), now=NOW)
    with pytest.raises(ReportInvalid, match="in the future"):
        parse_form(b"laptop=SHC1&connected_at=" + later.replace(b"+", b"%2B"), now=NOW)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"x" * (MAX_FORM_BYTES + 1), "larger than"),
        ("laptop=SHC1&connected_at=2013-01-28&ip_address=é".encode(), "ASCII"),
        (b"laptop=SHC1&connected_at=1999-01-01", "before 2006"),
        (b"laptop=SHC1&connected_at=2013-01-28&free_space=1.5", "whole number"),
        (b"", "laptop and connected_at are required"),
    ],
)
def test_a_bad_form_says_what_is_wrong(body, message):
    with pytest.raises(ReportInvalid, match=message):
        parse_form(body, now=NOW)


def test_a_batch_wants_numbers_and_booleans_not_strings():
    item = {"laptop": "SHC1", "connected_at": "2013-01-28", "free_space": 5, "stolen": True}
    assert parse_batch(json.dumps([item]).encode(), now=NOW)[0].stolen is True
    with pytest.raises(ReportInvalid, match=r"item 0: stolen must be true or false$"):
        parse_batch(b'[{"laptop": "SHC1", "connected_at": "2013-01-28", "stolen": "1"}]', now=NOW)


def test_a_csv_export_is_read_line_by_line_with_its_numbers():
    lines = [
        "\ufeffserial_number,connected_at,ip_address,vhash,free_space,stolen,id\n",
        f"SHC1,2013-01-28 21:52:31,10.0.0.1,{VHASH},10,t,1\n",
        "\n",
        "SHC2,2013-01-28 21:52:31,10.0.0.1,nohash,10,t,2\n",
    ]

    read = list(read_csv(lines, now=NOW))

    assert [(line.line, line.report is not None, line.error) for line in read] == [
        (2, True, ""),
        (4, False, "vhash must be 64 lowercase hexadecimal digits"),
    ]
