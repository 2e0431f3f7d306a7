"""Hostile and broken input from the school side: the CSV import of school servers, the
check-in endpoint and the rsyncd log. Every row asserts the specific message, a 4xx (or a
failing command, or a log run that records nothing) and that nothing else changed."""

import io
import json
import random

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from schools import services
from schools.models import SchoolServer

from . import snapshot

CHECKIN_URL = "/api/schools/checkin/"
HOST = "xs-caacupe-1.local"
STAMP = "2026/11/26 03:02:11 [4242] "


@pytest.fixture
def server(db):
    """The school server every row talks about, exactly as a good import would leave it."""
    return SchoolServer.objects.create(
        hostname=HOST,
        name="xs-caacupe-1",
        school="Escuela 1",
        department="Cordillera",
        address="10.1.2.3",
    )


# --- CSV import of school servers ----------------------------------------------------------

HEADER = "hostname,name,school,department,contact,address,active,notes\n"

CSV_CASES = [
    ("missing-columns", b"host,escuela\nxs-1,Escuela\n", ":1: missing columns: hostname, school"),
    ("missing-school-column", b"hostname\nxs-1\n", ":1: missing columns: school"),
    ("empty-file", b"", ":1: missing columns: hostname, school"),
    ("only-blank-lines", b"\n\n\n", ":1: missing columns: hostname, school"),
    (
        "latin-1",
        HEADER.encode() + "xs-2,,Caacupé,,,,yes,\n".encode("latin-1"),
        "can't decode byte 0xe9",
    ),
    ("utf-16", (HEADER + "xs-2,,Escuela,,,,yes,\n").encode("utf-16"), "can't decode byte 0xff"),
    ("binary", b"\x89PNG\r\n\x1a\n" + random.Random(4).randbytes(300), "can't decode byte 0x89"),
    (
        "hostname-with-space",
        (HEADER + "xs caacupe,,Escuela,,,,,\n").encode(),
        ":2: hostname 'xs caacupe' is not a host name",
    ),
    (
        "hostname-climbs-out",
        (HEADER + "../../etc,,Escuela,,,,,\n").encode(),
        ":2: hostname '../../etc' is not a host name",
    ),
    (
        "hostname-with-nul",
        (HEADER + "xs-2\x00,,Escuela,,,,,\n").encode(),
        ":2: hostname 'xs-2\\x00' is not a host name",
    ),
    (
        "hostname-unicode",
        (HEADER + "xs-ñandutí,,Escuela,,,,,\n").encode(),
        ":2: hostname 'xs-ñandutí' is not a host name",
    ),
    ("school-empty", (HEADER + "xs-2,,  ,,,,,\n").encode(), ":2: school is empty"),
    (
        "school-with-nul",
        (HEADER + "xs-2,,Escuela\x00,,,,,\n").encode(),
        ":2: school holds a control character (U+0000)",
    ),
    (
        "notes-with-nul",
        (HEADER + f"{HOST},xs-caacupe-1,Escuela 1,Cordillera,,10.1.2.3,yes,a\x00b\n").encode(),
        ":2: notes holds a control character (U+0000)",
    ),
    (
        "contact-with-escape",
        (HEADER + "xs-2,,Escuela,,\x1b[31mAna,,,\n").encode(),
        ":2: contact holds a control character (U+001B)",
    ),
    (
        "active-maybe",
        (HEADER + "xs-2,,Escuela,,,,maybe,\n").encode(),
        ":2: active must be yes or no, not 'maybe'",
    ),
    (
        "address-not-ip",
        (HEADER + "xs-2,,Escuela,,,999.1.1.1,,\n").encode(),
        ":2: address '999.1.1.1' is not an IP address",
    ),
    (
        "more-fields-than-columns",
        (HEADER + "xs-2,,Escuela,,,,,,extra,more\n").encode(),
        ":2: more fields than columns",
    ),
    (
        "name-too-long",
        (HEADER + f"xs-2,{'n' * 101},Escuela,,,,,\n").encode(),
        ":2: name is longer than 100 characters",
    ),
    ("unterminated-quote", (HEADER + '"xs-2,,Escuela,,,,,\n').encode(), "is not a host name"),
    (
        "field-over-csv-limit",
        (HEADER + "xs-2,,Escuela,,,,," + "n" * 200_000 + "\n").encode(),
        ":2: this line cannot be read as CSV (field larger than field limit",
    ),
    # The first line is the server exactly as it is: importing it changes nothing.
    (
        "duplicate-hostname",
        (
            HEADER
            + f"{HOST},xs-caacupe-1,Escuela 1,Cordillera,,10.1.2.3,yes,\n"
            + "XS-CAACUPE-1.local,other,Otra escuela,,,,no,\n"
        ).encode(),
        f":3: {HOST} already appears on line 2",
    ),
]


@pytest.mark.parametrize(("id_", "data", "expect"), CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_a_bad_school_server_csv_is_refused_and_changes_nothing(
    id_, data, expect, server, tmp_path, capsys
):
    path = tmp_path / "servers.csv"
    path.write_bytes(data)
    before = snapshot.take()
    with pytest.raises(CommandError) as caught:
        call_command("import_school_servers", str(path))
    said = str(caught.value) + capsys.readouterr().err
    assert expect in said, said
    snapshot.assert_unchanged(before)


# --- Check-in endpoint ---------------------------------------------------------------------


def report(**fields):
    return json.dumps({"hostname": HOST, "builds": [], **fields}).encode()


def build(**fields):
    return report(builds=[{"name": "py801-2", **fields}])


CHECKIN_CASES = [
    # id, auth ("" none, "good" the server's token, else the header), body, type, status, message
    ("no-token", "", report(), "application/json", 401, "Send the server's token"),
    (
        "unknown-token",
        "Bearer not-a-token",
        report(),
        "application/json",
        401,
        "Unknown or revoked token.",
    ),
    ("token-scheme", "Token good", report(), "application/json", 401, "Send the server's token"),
    ("empty-bearer", "Bearer ", report(), "application/json", 401, "Send the server's token"),
    ("text-plain", "good", report(), "text/plain", 415, "Send the report as application/json."),
    (
        "form-encoded",
        "good",
        b"hostname=x",
        "application/x-www-form-urlencoded",
        415,
        "Send the report as application/json.",
    ),
    (
        "multipart",
        "good",
        b"--x--",
        "multipart/form-data; boundary=x",
        415,
        "Send the report as application/json.",
    ),
    (
        "huge-body",
        "good",
        b'{"hostname": "' + b"x" * 300_000 + b'"}',
        "application/json",
        413,
        "The report must be at most 262144 bytes.",
    ),
    ("blank-body", "good", b" \n", "application/json", 400, "Invalid report: the body is not JSON"),
    (
        "malformed-json",
        "good",
        b'{"hostname": ',
        "application/json",
        400,
        "Invalid report: the body is not JSON",
    ),
    (
        "not-utf8",
        "good",
        b'{"hostname": "xs-\xe9"}',
        "application/json",
        400,
        "the body is not UTF-8",
    ),
    ("json-array", "good", b"[]", "application/json", 400, "the body must be a JSON object"),
    ("json-null", "good", b"null", "application/json", 400, "the body must be a JSON object"),
    (
        "nested-too-deep",
        "good",
        b"[" * 100_000 + b"]" * 100_000,
        "application/json",
        400,
        "the body is not JSON: it is nested too deeply",
    ),
    (
        "number-too-long",
        "good",
        b'{"disk_free_bytes": ' + b"9" * 5000 + b"}",
        "application/json",
        400,
        "the body is not JSON",
    ),
    (
        "missing-hostname",
        "good",
        b'{"builds": []}',
        "application/json",
        400,
        "hostname is required and must be a host name",
    ),
    (
        "hostname-climbs-out",
        "good",
        json.dumps({"hostname": "../etc", "builds": []}).encode(),
        "application/json",
        400,
        "hostname is required and must be a host name",
    ),
    (
        "missing-builds",
        "good",
        json.dumps({"hostname": HOST}).encode(),
        "application/json",
        400,
        "builds is required and must be a list",
    ),
    (
        "builds-not-a-list",
        "good",
        report(builds={"py801-2": True}),
        "application/json",
        400,
        "builds is required and must be a list",
    ),
    ("unknown-field", "good", report(evil=1), "application/json", 400, "unknown fields: evil"),
    (
        "another-servers-name",
        "good",
        json.dumps({"hostname": "xs-luque-1.local", "builds": []}).encode(),
        "application/json",
        403,
        f"This token belongs to {HOST}, not xs-luque-1.local.",
    ),
    (
        "build-not-an-object",
        "good",
        report(builds=["py801-2"]),
        "application/json",
        400,
        "builds[0] must be an object",
    ),
    (
        "build-name-climbs-out",
        "good",
        report(builds=[{"name": "../py801-2"}]),
        "application/json",
        400,
        "builds[0].name is required and must be a build name",
    ),
    (
        "build-unknown-field",
        "good",
        build(path="/etc"),
        "application/json",
        400,
        "builds[0] has unknown fields: path",
    ),
    (
        "build-md5-garbled",
        "good",
        build(md5="xyz"),
        "application/json",
        400,
        "builds[0].md5 must be 32 hexadecimal digits",
    ),
    (
        "build-listed-twice",
        "good",
        report(builds=[{"name": "py801-2"}, {"name": "py801-2"}]),
        "application/json",
        400,
        "builds[1].name py801-2 is listed twice",
    ),
    (
        "build-verified-string",
        "good",
        build(verified="yes"),
        "application/json",
        400,
        "builds[0].verified must be true or false",
    ),
    (
        "too-many-builds",
        "good",
        report(builds=[{"name": f"b{n}"} for n in range(2001)]),
        "application/json",
        400,
        "builds lists more than 2000 entries",
    ),
    (
        "clock-garbage",
        "good",
        report(clock="yesterday"),
        "application/json",
        400,
        "clock must be an ISO 8601 time",
    ),
    (
        "clock-without-zone",
        "good",
        report(clock="2026-11-26T03:00:00"),
        "application/json",
        400,
        "clock must include its time zone",
    ),
    (
        "clock-implausible",
        "good",
        report(clock="1970-01-01T00:00:00Z"),
        "application/json",
        400,
        "clock is not a plausible date",
    ),
    (
        "disk-free-negative",
        "good",
        report(disk_free_bytes=-1),
        "application/json",
        400,
        "disk_free_bytes must be between 0 and",
    ),
    (
        "disk-free-nan",
        "good",
        b'{"hostname": "%s", "builds": [], "disk_free_bytes": NaN}' % HOST.encode(),
        "application/json",
        400,
        "disk_free_bytes must be a whole number",
    ),
    (
        "refresh-status-bool",
        "good",
        report(last_refresh_status=True),
        "application/json",
        400,
        "last_refresh_status must be a whole number",
    ),
    (
        "refresh-status-huge",
        "good",
        report(last_refresh_status=2**40),
        "application/json",
        400,
        "last_refresh_status must be between",
    ),
    (
        "client-version-long",
        "good",
        report(client_version="v" * 51),
        "application/json",
        400,
        "client_version must be a string of at most 50 characters",
    ),
]


@pytest.mark.parametrize(
    ("id_", "auth", "body", "content_type", "status", "expect"),
    CHECKIN_CASES,
    ids=[c[0] for c in CHECKIN_CASES],
)
def test_a_bad_check_in_is_refused_with_its_reason_and_changes_nothing(
    id_, auth, body, content_type, status, expect, server
):
    key = services.server_token_rotate(server=server)
    headers = {}
    if auth:
        headers["HTTP_AUTHORIZATION"] = (
            f"Bearer {key}" if auth == "good" else auth.replace("good", key)
        )
    before = snapshot.take()
    response = Client().post(CHECKIN_URL, body, content_type=content_type, **headers)
    assert response.status_code == status, response.content
    assert expect in response.json()["error"]
    snapshot.assert_unchanged(before)


def test_an_inactive_servers_check_in_is_refused_and_changes_nothing(server):
    key = services.server_token_rotate(server=server)
    SchoolServer.objects.filter(pk=server.pk).update(active=False)
    before = snapshot.take()
    response = Client().post(
        CHECKIN_URL, report(), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 403
    assert response.json()["error"] == f"{HOST} is marked inactive in the portal."
    snapshot.assert_unchanged(before)


# --- rsyncd log ----------------------------------------------------------------------------


def transfer(path, host=HOST, address="10.1.2.3", operation="send", size="1234"):
    return f"{STAMP}{operation} {host} [{address}] puppetcontent () {path} {size}\n".encode()


NOTHING = "0 transfers, 0 recorded, 0 unrelated files, 0 unknown hosts"

RSYNC_CASES = [
    ("empty-file", b"", NOTHING),
    ("binary-garbage", random.Random(6).randbytes(20_000), NOTHING),
    ("nul-run", b"\x00" * 5000, NOTHING),
    (
        "not-utf8",
        b"\xff\xfe" + transfer("os/py801-2.name").replace(b"py801", b"py\xe9801"),
        NOTHING,
    ),
    ("month-13", transfer("os/py801-2.name").replace(b"2026/11/26", b"2026/13/26"), NOTHING),
    ("february-30", transfer("os/py801-2.name").replace(b"2026/11/26", b"2026/02/30"), NOTHING),
    (
        "syslog-bad-month",
        f"Foo 26 03:02:11 mothership rsyncd[1]: send {HOST} [10.1.2.3] "
        "puppetcontent () os/py801-2.name 8\n".encode(),
        NOTHING,
    ),
    ("size-too-many-digits", transfer("os/py801-2.name", size="9" * 30), NOTHING),
    ("line-of-a-megabyte", b"x" * 1_000_000 + b"\n", NOTHING),
    ("crlf-and-truncated", transfer("os/py801-2.name")[:40] + b"\r\n", NOTHING),
    ("received-not-sent", transfer("os/py801-2.name", operation="recv"), NOTHING),
    (
        "unknown-host",
        transfer("os/py801-2.name", host="evil.example", address="192.0.2.66"),
        "1 transfers, 0 recorded, 0 unrelated files, 1 unknown hosts: evil.example",
    ),
    (
        "not-a-build-file",
        transfer("os/../../etc/passwd"),
        "1 transfers, 0 recorded, 1 unrelated files, 0 unknown hosts",
    ),
    (
        "rsync-temp-file",
        transfer("os/.py801-2-tree.tar.bz2.Ab12Cd"),
        "1 transfers, 0 recorded, 1 unrelated files, 0 unknown hosts",
    ),
    (
        "build-md5-file-only",
        transfer("os/py801-2-tree.tar.bz2.md5"),
        "1 transfers, 0 recorded, 1 unrelated files, 0 unknown hosts",
    ),
]


@pytest.mark.parametrize(("id_", "data", "expect"), RSYNC_CASES, ids=[c[0] for c in RSYNC_CASES])
def test_a_garbled_rsyncd_log_records_nothing(id_, data, expect, server, tmp_path):
    path = tmp_path / "rsyncd.log"
    path.write_bytes(data)
    out = io.StringIO()
    before = snapshot.take()
    call_command("ingest_rsync_log", str(path), stdout=out)
    assert out.getvalue().strip() == expect
    snapshot.assert_unchanged(before)


@pytest.mark.parametrize("where", ["missing", "folder"])
def test_an_rsyncd_log_that_is_not_a_file_fails_and_changes_nothing(where, server, tmp_path):
    path = tmp_path / "rsyncd.log"
    if where == "folder":
        path.mkdir()
    before = snapshot.take()
    with pytest.raises(CommandError, match=r"rsyncd\.log was not found\."):
        call_command("ingest_rsync_log", str(path))
    snapshot.assert_unchanged(before)


def test_a_syslog_year_out_of_range_records_nothing(server, tmp_path):
    path = tmp_path / "rsyncd.log"
    path.write_bytes(
        f"Nov 26 03:02:11 mothership rsyncd[1]: send {HOST} [10.1.2.3] puppetcontent () "
        "os/py801-2.name 8\n".encode()
    )
    out = io.StringIO()
    before = snapshot.take()
    call_command("ingest_rsync_log", str(path), "--year", "99999", stdout=out)
    assert out.getvalue().strip() == NOTHING
    snapshot.assert_unchanged(before)
