"""Parsing the mothership's rsyncd log and following it as it grows and rotates."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from schools.rsynclog import Position, Transfer, build_file, parse_line, read_new_lines

TZ = ZoneInfo("America/Asuncion")
STAMP = "2026/11/26 03:02:11 [12345] "
TARBALL_SENT = (
    f"{STAMP}send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/py801-2-tree.tar.bz2 1234567890"
)


def parse(line, **kwargs):
    return parse_line(line, tz=TZ, **kwargs)


# --- Transfer lines ---------------------------------------------------------------------------


def test_it_reads_every_field_of_a_sent_tarball():
    assert parse(TARBALL_SENT) == Transfer(
        at=datetime(2026, 11, 26, 3, 2, 11, tzinfo=TZ),
        pid=12345,
        operation="send",
        host="xs-caacupe-1.local",
        address="10.1.2.3",
        module="puppetcontent",
        user="",
        path="os/py801-2-tree.tar.bz2",
        size=1234567890,
        build_name="py801-2",
        kind="tarball",
    )


def test_it_gives_the_time_in_the_zone_it_is_told():
    assert parse(TARBALL_SENT).at.tzinfo is TZ


def test_it_recognises_a_sent_name_file():
    line = f"{STAMP}send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/py801-2.name 8"
    transfer = parse(line)
    assert (transfer.build_name, transfer.kind, transfer.size) == ("py801-2", "name", 8)


def test_it_reads_a_file_that_belongs_to_no_build_without_a_build_name():
    transfer = parse(f"{STAMP}send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/README 120")
    assert transfer.path == "os/README"
    assert (transfer.build_name, transfer.kind) == (None, None)


@pytest.mark.parametrize(
    "message",
    [
        "connect from xs-caacupe-1.local (10.1.2.3)",
        "rsync on puppetcontent/os/ from xs-caacupe-1.local (10.1.2.3)",
        "building file list",
        "sent 1234600000 bytes  received 1234 bytes  total size 2469000000",
        "rsync error: timeout in data send/receive (code 30) at io.c(201) [sender=3.2.7]",
        "",
    ],
)
def test_it_returns_none_for_lines_that_are_not_transfers(message):
    assert parse(STAMP + message) is None


def test_it_lower_cases_an_unknown_host():
    line = f"{STAMP}send UNKNOWN [10.1.2.3] puppetcontent () os/py801-2.name 8"
    assert parse(line).host == "unknown"


def test_it_takes_the_address_as_host_when_hostname_lookup_is_off():
    line = f"{STAMP}send 10.1.2.3 [10.1.2.3] puppetcontent () os/py801-2.name 8"
    assert parse(line).host == "10.1.2.3"


def test_it_lower_cases_a_host_name():
    line = f"{STAMP}send XS-Caacupe-1.LOCAL [10.1.2.3] puppetcontent () os/py801-2.name 8"
    assert parse(line).host == "xs-caacupe-1.local"


def test_it_reads_an_ipv6_address_without_its_brackets():
    line = f"{STAMP}send xs-caacupe-1.local [2001:db8::1] puppetcontent () os/py801-2.name 8"
    assert parse(line).address == "2001:db8::1"


def test_it_reads_the_user_an_authenticated_client_logged_in_as():
    line = f"{STAMP}send xs-caacupe-1.local [10.1.2.3] puppetcontent (puppet) os/py801-2.name 8"
    assert parse(line).user == "puppet"


def test_it_reads_a_file_name_with_spaces():
    line = f"{STAMP}send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/old builds/a b.txt 42"
    transfer = parse(line)
    assert (transfer.path, transfer.size) == ("os/old builds/a b.txt", 42)


def test_it_reads_a_received_file():
    line = f"{STAMP}recv xs-caacupe-1.local [10.1.2.3] uploads () incoming/report.txt 77"
    transfer = parse(line)
    assert (transfer.operation, transfer.module, transfer.path) == (
        "recv",
        "uploads",
        "incoming/report.txt",
    )


def test_it_returns_none_for_a_deletion():
    line = f"{STAMP}del. xs-caacupe-1.local [10.1.2.3] uploads () incoming/report.txt 0"
    assert parse(line) is None


# --- Syslog prefixes ---------------------------------------------------------------------------


def test_it_reads_a_syslog_line_in_the_year_it_is_given():
    line = (
        "Nov 26 03:02:11 mothership rsyncd[12345]: "
        "send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/py801-2.contents 5000"
    )
    transfer = parse(line, year=2026)
    assert transfer.at == datetime(2026, 11, 26, 3, 2, 11, tzinfo=TZ)
    assert (transfer.pid, transfer.kind) == (12345, "contents")


def test_it_reads_a_syslog_day_padded_with_a_space():
    line = (
        "Dec  6 23:59:59 mothership rsyncd[7]: "
        "send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/py801-2.name 8"
    )
    assert parse(line, year=2026).at == datetime(2026, 12, 6, 23, 59, 59, tzinfo=TZ)


def test_it_assumes_the_current_year_for_a_syslog_line_without_one():
    line = (
        "Jan  1 00:00:00 mothership rsyncd[7]: "
        "send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/py801-2.name 8"
    )
    assert parse(line).at.year == datetime.now(TZ).year


def test_it_returns_none_for_a_syslog_date_that_does_not_exist_in_the_given_year():
    line = (
        "Feb 29 03:02:11 mothership rsyncd[7]: "
        "send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/py801-2.name 8"
    )
    assert parse(line, year=2027) is None


def test_it_reads_an_rfc3339_syslog_line_in_the_zone_it_is_told():
    line = (
        "2026-11-26T06:02:11.123456+00:00 mothership rsyncd[12345]: "
        "send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/py801-2.name 8"
    )
    at = parse(line).at
    assert at == datetime(2026, 11, 26, 6, 2, 11, 123456, tzinfo=UTC)
    assert at.tzinfo is TZ


# --- Broken input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\n",
        "2026/11/26 03:02",
        "2026/11/26 03:02:11 [12345] send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/py8",
        "2026/11/26 03:02:11 [12345] send xs-caacupe-1.local [10.1.2.3 puppetcontent () os/a 1",
        "2026/11/26 03:02:11 [12345] send xs-caacupe-1.local [10.1.2.3] puppetcontent os/a 1",
        "2026/13/26 03:02:11 [12345] send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/a 1",
        "2026/11/26 03:02:11 [] send xs-caacupe-1.local [10.1.2.3] puppetcontent () os/a 1",
        "Foo 26 03:02:11 mothership rsyncd[1]: send xs [10.1.2.3] puppetcontent () os/a 1",
        "garbage \x00\xff\ufffd",
        f"2026/11/26 03:02:11 [{'9' * 5000}] send xs [10.1.2.3] puppetcontent () os/a 1",
        f"2026/11/26 03:02:11 [1] send xs [10.1.2.3] puppetcontent () os/a {'9' * 5000}",
    ],
)
def test_it_returns_none_for_a_garbled_or_truncated_line(line):
    assert parse(line) is None


def test_it_ignores_a_trailing_carriage_return():
    assert parse(TARBALL_SENT + "\r\n").size == 1234567890


def test_it_reads_a_line_given_as_bytes():
    assert parse(TARBALL_SENT.encode()) == parse(TARBALL_SENT)


def test_it_replaces_bytes_that_are_not_utf8():
    line = STAMP.encode() + b"send xs [10.1.2.3] puppetcontent () os/A\xf1o.txt 3"
    assert parse(line).path == "os/A\ufffdo.txt"


def test_it_reads_a_line_that_follows_crash_padding_of_nul_bytes():
    assert parse("\x00" * 100 + TARBALL_SENT).kind == "tarball"


# --- Build files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("py801-2-tree.tar.bz2", ("py801-2", "tarball")),
        ("os/py801-2-tree.tar.xz", ("py801-2", "tarball")),
        ("os/py801-2-tree.tar.lzma", ("py801-2", "tarball")),
        ("py801-2-tree.tar.bz2.md5", ("py801-2", "md5")),
        ("os/py801-2-tree.tar.xz.md5", ("py801-2", "md5")),
        ("os/py801-2.contents", ("py801-2", "contents")),
        ("os/py801-2.name", ("py801-2", "name")),
        ("os/13.2.0_xo1.5-tree.tar.xz", ("13.2.0_xo1.5", "tarball")),
    ],
)
def test_it_tells_which_build_a_file_belongs_to_and_what_kind_it_is(path, expected):
    assert build_file(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "os/README",
        "os/foo.tar.gz",
        "os/py801-2-tree.tar.gz",
        "os/py801-2.tar.bz2",
        "os/py801-2-tree.tar.bz2.sha256",
        "os/.py801-2-tree.tar.bz2.Xy1abc",
        "os/.py801-2.name",
        "os/-bad.name",
        "os/has space.name",
        f"os/{'a' * 65}.name",
        "os/py801-2.name\n",
        "os/",
        "",
    ],
)
def test_it_finds_no_build_for_other_files(path):
    assert build_file(path) is None


def test_it_accepts_a_build_name_of_the_longest_allowed_length():
    assert build_file(f"{'a' * 64}.name") == ("a" * 64, "name")


# --- Following the log ---------------------------------------------------------------------


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "rsyncd.log"
    path.write_bytes(b"")
    return path


def append(path, data):
    with open(path, "ab") as file:
        file.write(data)


def test_it_reads_a_log_from_the_start_when_there_is_no_position(log):
    append(log, b"one\ntwo\n")
    lines, position = read_new_lines(log, None)
    assert lines == [b"one", b"two"]
    assert position == Position(log.stat().st_ino, 8)


def test_it_reads_only_the_lines_appended_since_the_position(log):
    append(log, b"one\n")
    _, position = read_new_lines(log, None)
    append(log, b"two\nthree\n")
    assert read_new_lines(log, position)[0] == [b"two", b"three"]


def test_it_returns_nothing_when_nothing_was_appended(log):
    append(log, b"one\n")
    _, position = read_new_lines(log, None)
    assert read_new_lines(log, position) == ([], position)


def test_it_holds_back_a_final_line_without_its_newline(log):
    append(log, b"one\ntw")
    lines, position = read_new_lines(log, None)
    assert lines == [b"one"]
    assert position.offset == 4


def test_it_returns_a_partial_line_whole_once_it_is_completed(log):
    append(log, b"one\ntw")
    _, position = read_new_lines(log, None)
    append(log, b"o\n")
    assert read_new_lines(log, position)[0] == [b"two"]


def test_it_keeps_blank_lines_and_carriage_returns_as_they_are(log):
    append(log, b"one\r\n\ntwo\n")
    assert read_new_lines(log, None)[0] == [b"one\r", b"", b"two"]


def test_it_starts_over_on_a_new_file_after_rotation(log):
    append(log, b"old one\nold two\n")
    _, position = read_new_lines(log, None)
    log.rename(log.with_name("rsyncd.log.1"))
    # Longer than the old offset, so only the inode can tell this is another file.
    append(log, b"new one\nnew two\nnew three\n")
    lines, new_position = read_new_lines(log, position)
    assert lines == [b"new one", b"new two", b"new three"]
    assert new_position == Position(log.stat().st_ino, 26)


def test_it_starts_over_when_the_file_was_truncated(log):
    append(log, b"old one\nold two\n")
    _, position = read_new_lines(log, None)
    log.write_bytes(b"new\n")
    assert read_new_lines(log, position) == ([b"new"], Position(position.inode, 4))


def test_it_reads_no_more_than_max_bytes_per_call(log):
    append(log, b"aaaa\nbbbb\ncccc\n")
    lines, position = read_new_lines(log, None, max_bytes=12)
    assert (lines, position.offset) == ([b"aaaa", b"bbbb"], 10)
    assert read_new_lines(log, position, max_bytes=12)[0] == [b"cccc"]


def test_it_moves_past_a_line_longer_than_max_bytes_instead_of_rereading_it(log):
    append(log, b"x" * 30 + b"\nafter\n")
    _, position = read_new_lines(log, None, max_bytes=10)
    assert position.offset == 10


def test_it_returns_the_position_unchanged_when_the_file_is_missing(tmp_path):
    position = Position(inode=42, offset=100)
    assert read_new_lines(tmp_path / "gone.log", position) == ([], position)


def test_it_returns_no_position_for_a_missing_file_it_never_read(tmp_path):
    assert read_new_lines(tmp_path / "gone.log", None) == ([], None)


def test_it_parses_what_it_reads_from_a_real_log(log):
    append(
        log,
        b"2026/11/26 03:00:01 [12345] connect from xs-caacupe-1.local (10.1.2.3)\n"
        + TARBALL_SENT.encode()
        + b"\n2026/11/26 03:02:12 [12345] sent 1234600000 bytes  received 1234 bytes\n",
    )
    lines, _ = read_new_lines(log, None)
    transfers = [t for t in (parse(line) for line in lines) if t is not None]
    assert [t.path for t in transfers] == ["os/py801-2-tree.tar.bz2"]
