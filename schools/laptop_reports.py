"""Laptop reports as Inventario's `POST /connection_events/report` takes them, validated
strictly. Pure: bytes (or CSV text) in, `Report`s out; `now` is passed in.

Three shapes carry the same six fields:
- one report as `application/x-www-form-urlencoded` (Inventario's form, so oatslite or a
  relay can post to the portal unchanged): `parse_form`;
- a batch as a JSON list of objects: `parse_batch` (every item must be right, or none is
  taken, and the message names the item's index);
- an export of Inventario's `connection_events` as CSV: `read_csv`, line by line.

As in Inventario's table, `laptop` and `connected_at` are required; `ip_address`,
`free_space` and `vhash` may be missing or empty (unknown), `stolen` defaults to false.
`connected_at` without an offset is UTC (Inventario's `2013-01-28T21:52:31.822307`).
"""

import csv
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

from .checkin import json_body
from .servers_csv import normal_ip

MAX_FORM_BYTES = 4 * 1024
MAX_BATCH_ITEMS = 1000
MAX_BATCH_BYTES = 512 * 1024
# XO serial numbers are three letters and eight hex digits (SHC20000001); other laptops in
# an inventory may differ, so any short run of letters, digits and dashes is a serial.
SERIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
VHASH_RE = re.compile(r"^[0-9a-f]{64}$")
# A sender's clock may run a little ahead of ours; a report further in the future would make
# every later true report of that laptop look old (see services.laptop_reports_record).
FUTURE_TOLERANCE = timedelta(hours=1)
FIRST_YEAR = 2006  # no XO reported before
MAX_FREE_SPACE_KIB = 2**53
FIELDS = ("laptop", "connected_at", "ip_address", "free_space", "stolen", "vhash")
REQUIRED = ("laptop", "connected_at")
CSV_COLUMNS = ("serial_number", "connected_at", "ip_address", "vhash", "free_space", "stolen")
# Boolean spellings Inventario (Rails) accepts from a form or a database export.
TRUE_WORDS = {"true", "t", "1", "yes"}
FALSE_WORDS = {"false", "f", "0", "no"}
# What database exports write for a missing value.
CSV_NULLS = {"", "NULL", "\\N"}


class ReportInvalid(ValueError):
    """What is wrong with a report, in a sentence its sender's administrator can act on."""


@dataclass(frozen=True)
class Report:
    serial: str  # upper-cased
    connected_at: datetime  # aware, UTC
    address: str | None
    free_space_kib: int | None
    stolen: bool
    vhash: str  # "" when the laptop did not say


# --- One value at a time ---------------------------------------------------------------------


def _serial(value, where):
    if not isinstance(value, str) or not SERIAL_RE.match(value):
        raise ReportInvalid(
            f"{where}laptop must be the laptop's serial number (letters, digits and dashes, "
            "at most 32), e.g. SHC20000001"
        )
    return value.upper()


def _connected_at(value, where, now):
    example = "e.g. 2013-01-28T21:52:31.822307 (UTC) or 2013-01-28T18:52:31-03:00"
    if not isinstance(value, str) or not value:
        raise ReportInvalid(f"{where}connected_at must be an ISO 8601 time, {example}")
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ReportInvalid(
            f"{where}connected_at {value[:40]!r} is not an ISO 8601 time, {example}"
        ) from None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    if at.year < FIRST_YEAR:
        raise ReportInvalid(f"{where}connected_at {value[:40]!r} is before {FIRST_YEAR}")
    if at > now + FUTURE_TOLERANCE:
        raise ReportInvalid(
            f"{where}connected_at {value[:40]!r} is in the future (the portal's clock says "
            f"{now.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}); check the sender's clock"
        )
    return at


def _address(value, where):
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ReportInvalid(f"{where}ip_address must be an IPv4 or IPv6 address")
    address = normal_ip(value)
    if address is None:
        raise ReportInvalid(f"{where}ip_address {value[:60]!r} is not an IPv4 or IPv6 address")
    return address


def _free_space(value, where, typed):
    if value is None or (value == "" and not typed):
        return None
    if not typed and isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    # bool is an int in Python; a JSON true is not a number here.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReportInvalid(f"{where}free_space must be a whole number of KiB")
    if not 0 <= value <= MAX_FREE_SPACE_KIB:
        raise ReportInvalid(f"{where}free_space must be between 0 and {MAX_FREE_SPACE_KIB} KiB")
    return value


def _stolen(value, where, typed):
    if value is None or (value == "" and not typed):
        return False
    if isinstance(value, bool):
        return value
    if not typed and isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ReportInvalid(f"{where}stolen must be true or false" + ("" if typed else " (or 1 or 0)"))


def _vhash(value, where):
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not VHASH_RE.match(value):
        raise ReportInvalid(f"{where}vhash must be 64 lowercase hexadecimal digits")
    return value


def report_from(fields: dict, *, now: datetime, where: str = "", typed: bool = False) -> Report:
    """One report from its fields: strings (a form, a CSV line), or JSON values when `typed`
    (then free_space is a number and stolen true or false, never a string); `where`
    prefixes messages (e.g. "item 3: ")."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ReportInvalid(
            f"{where}unknown fields: {', '.join(sorted(unknown))} "
            f"(a report has {', '.join(FIELDS)})"
        )
    missing = [name for name in REQUIRED if fields.get(name) in (None, "")]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ReportInvalid(f"{where}{' and '.join(missing)} {verb} required")
    return Report(
        serial=_serial(fields["laptop"], where),
        connected_at=_connected_at(fields["connected_at"], where, now),
        address=_address(fields.get("ip_address"), where),
        free_space_kib=_free_space(fields.get("free_space"), where, typed),
        stolen=_stolen(fields.get("stolen"), where, typed),
        vhash=_vhash(fields.get("vhash"), where),
    )


# --- The shapes ------------------------------------------------------------------------------


def parse_form(body: bytes, *, now: datetime) -> Report:
    """One report, as Inventario's form (`application/x-www-form-urlencoded`)."""
    if len(body) > MAX_FORM_BYTES:
        raise ReportInvalid(f"the form is larger than {MAX_FORM_BYTES} bytes")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ReportInvalid("the form must be URL-encoded ASCII") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        raise ReportInvalid("the body is not a URL-encoded form") from None
    fields = {}
    for name, value in pairs:
        if name in fields:
            raise ReportInvalid(f"{name} is given twice")
        fields[name] = value
    return report_from(fields, now=now)


def parse_batch(body: bytes, *, now: datetime) -> list[Report]:
    """A batch: a JSON list of report objects (at most MAX_BATCH_ITEMS)."""
    data = json_body(body, limit=MAX_BATCH_BYTES, invalid=ReportInvalid)
    if not isinstance(data, list):
        raise ReportInvalid("the body must be a JSON list of reports")
    if not data:
        raise ReportInvalid("the list of reports is empty")
    if len(data) > MAX_BATCH_ITEMS:
        raise ReportInvalid(f"the list holds more than {MAX_BATCH_ITEMS} reports; split it")
    reports = []
    for index, item in enumerate(data):
        where = f"item {index}: "
        if not isinstance(item, dict):
            raise ReportInvalid(f"{where}a report must be a JSON object")
        reports.append(report_from(item, now=now, where=where, typed=True))
    return reports


@dataclass(frozen=True)
class CsvLine:
    line: int  # 1 is the header
    report: Report | None = None
    error: str = ""


def read_csv(lines, *, now: datetime):
    """Yield a `CsvLine` per data line of an export with CSV_COLUMNS (any order, others
    ignored), its report or what is wrong with it. A file without those columns raises
    ReportInvalid. Empty cells, NULL and \\N are missing values."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise ReportInvalid("the file is empty")
    header = [name.strip().lstrip("\ufeff").lower() for name in header]
    missing = [name for name in CSV_COLUMNS if name not in header]
    if missing:
        raise ReportInvalid(
            f"the header lacks {', '.join(missing)} (it needs {', '.join(CSV_COLUMNS)})"
        )
    columns = {name: header.index(name) for name in CSV_COLUMNS}
    for row in reader:
        number = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            yield CsvLine(number, error=f"{len(row)} cells where the header has {len(header)}")
            continue
        fields = {
            "laptop" if name == "serial_number" else name: row[index].strip()
            for name, index in columns.items()
        }
        fields = {name: None if value in CSV_NULLS else value for name, value in fields.items()}
        try:
            yield CsvLine(number, report=report_from(fields, now=now))
        except ReportInvalid as problem:
            yield CsvLine(number, error=str(problem).replace("laptop ", "serial_number ", 1))
