"""The school servers' CSV file (the overview's export, `import_school_servers`, the import
page), read and compared with what the portal holds. Pure module: no ORM, no I/O.

`read(text)` gives the good lines and the errors; `compare(reading, stored)` turns them into
a `Plan`, per line a new server, a change (field: old → new) or nothing to do. A column the
file leaves out is not a change: the servers the file names keep what they hold there (a
file of hostname and school cannot wipe notes or switch servers back on), and a new server
gets what an empty cell gives, the model's default.
`services.servers_import_plan` shows a plan, `services.servers_import_csv` applies one: the
preview and the import cannot disagree on what a line means.

A file from Inventario (`schools.inventario`) reads into the same `Reading`, each line
carrying its Inventario place (`inventario_place_id`): `compare` finds its server by that
place first, then by host name, so a host name changed in Inventario renames the server.

Round trip: a file exported by the overview, read and compared with the rows it was exported
from, is a plan of unchanged lines (`spreadsheet_safe` and `_from_spreadsheet` undo each
other)."""

import csv
import hashlib
import io
import ipaddress
import json
import unicodedata
from dataclasses import dataclass, field

from django.utils import translation
from django.utils.translation import gettext_lazy as _

from releases.reasons import render

from .checkin import HOSTNAME_RE

CSV_COLUMNS = ["hostname", "name", "school", "department", "contact", "address", "active", "notes"]
REQUIRED_COLUMNS = {"hostname", "school"}
TRUE_WORDS = {"1", "true", "yes", "si", "sí", "y", "x"}
FALSE_WORDS = {"0", "false", "no", "n", ""}
# The fields a line sets, in the order the preview lists its changes.
FIELDS = ("name", "school", "department", "contact", "address", "active", "notes")
# What a line from Inventario (`schools.inventario`) also sets: the server's place there.
PLACE = "inventario_place_id"
LENGTH_LIMITS = (("name", 100), ("school", 200), ("department", 100), ("contact", 200))

# Control characters (Unicode Cc) a value may hold: tab anywhere, line breaks in the notes
# (a textarea's, which the export quotes). Any other is a typing or encoding accident, and
# NUL is one PostgreSQL refuses to store.
ALLOWED_CONTROLS = {"\t"}
ALLOWED_CONTROLS_IN = {"notes": {"\t", "\n", "\r"}}

# Text a spreadsheet would run as a formula; the CSV export prefixes it with an apostrophe
# (the OWASP advice against CSV injection), and the import takes that apostrophe off again.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# What to do about each kind of error, for the import page; the message itself (in
# releases.reasons) says what is wrong, and is all the management command prints.
HINTS = {
    "servers_csv_missing_columns": _(
        "The first line must name the columns, at least hostname and school; export the "
        "school servers as CSV to see the format."
    ),
    "servers_csv_unreadable": _(
        "Check the quotes on this line, or save the file again from the spreadsheet as CSV."
    ),
    "servers_csv_extra_fields": _(
        "Put values that contain a comma between double quotes, or remove the extra fields."
    ),
    "servers_csv_hostname": _(
        "Write the server's host name with letters, digits, dots and dashes, e.g. "
        "xs-caacupe-1.local."
    ),
    "servers_csv_school_empty": _("Write the name of the school; every server needs one."),
    "servers_csv_active": _("Write yes or no, or leave it empty for yes."),
    "servers_csv_address": _("Write an IPv4 or IPv6 address, e.g. 10.1.2.3, or leave it empty."),
    "servers_csv_too_long": _("Shorten it to at most %(limit)s characters."),
    "servers_csv_duplicate": _("Keep one line per server: merge the two lines into one."),
    "servers_csv_control_char": _(
        "Retype the value: it holds an invisible character (a NUL, or another control "
        "character) that the file or the spreadsheet put there."
    ),
    "servers_csv_other_place": _(
        "Check the host name in Inventario: two schools cannot share a server. If this "
        "school took the server over, change it by hand on the portal first."
    ),
    "servers_csv_hostname_taken": _(
        "Another server on the portal has this host name: rename or remove that one first."
    ),
}


def spreadsheet_safe(text: str) -> str:
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _from_spreadsheet(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text


def normal_ip(value: str) -> str | None:
    """`value` as the database keeps an IP address (IPv6 compressed, lower case), None
    when it is not one: an address written two ways must compare equal."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


@dataclass(frozen=True)
class LineError:
    """Line `line` of the file is refused: `code` and `params` say why (releases.reasons),
    `column` names the column to fix ("" for the whole line)."""

    line: int
    code: str
    params: dict = field(default_factory=dict)
    column: str = ""
    kind = "error"

    @property
    def message(self) -> str:
        """What is wrong, in the reader's language."""
        return render(self.code, self.params)

    @property
    def hint(self) -> str:
        """What to do about it, in the reader's language."""
        hint = HINTS.get(self.code)
        return str(hint) % self.params if hint else ""

    @property
    def english(self) -> str:
        """The message as the code writes it, whatever the language: the command prints it."""
        with translation.override(None):
            return self.message


class LineRefused(ValueError):
    """A bad line: `code` and `params` say why, `at` names the column to fix."""

    def __init__(self, code: str, at: str = "", **params):
        super().__init__(code)
        self.code, self.at, self.params = code, at, params


def _control_char(column: str, value: str) -> str:
    """The first control character of `value` the column may not hold, or ""."""
    allowed = ALLOWED_CONTROLS_IN.get(column, ALLOWED_CONTROLS)
    for char in value:
        if char not in allowed and unicodedata.category(char) == "Cc":
            return char
    return ""


def row_values(row: dict) -> tuple:
    """(hostname, {field: value as the row stores it}) of one CSV row, or LineRefused. Every
    field has a value: an empty cell's, for a column the file does not have (`compare`
    decides whether that counts)."""
    row = {
        key: _from_spreadsheet(value) if isinstance(value, str) else value
        for key, value in row.items()
    }
    hostname = (row.get("hostname") or "").strip().lower()
    if not hostname or not HOSTNAME_RE.match(hostname):
        raise LineRefused("servers_csv_hostname", "hostname", value=repr(hostname))
    # Only the columns that are read: the export's others (state, last_error...) are ignored.
    for column in CSV_COLUMNS:
        char = _control_char(column, row.get(column) or "")
        if char:
            code = f"U+{ord(char):04X}"
            raise LineRefused("servers_csv_control_char", column, column=column, char=code)
    school = (row.get("school") or "").strip()
    if not school:
        raise LineRefused("servers_csv_school_empty", "school")
    active_word = (row.get("active") or "").strip().lower()
    if active_word and active_word not in TRUE_WORDS | FALSE_WORDS:
        raise LineRefused("servers_csv_active", "active", value=repr(active_word))
    written = (row.get("address") or "").strip()
    address = normal_ip(written) if written else None
    if written and address is None:
        raise LineRefused("servers_csv_address", "address", value=repr(written))
    values = {
        "name": (row.get("name") or "").strip() or hostname.split(".")[0],
        "school": school,
        "department": (row.get("department") or "").strip(),
        "contact": (row.get("contact") or "").strip(),
        "address": address,
        "active": active_word in TRUE_WORDS if active_word else True,
        "notes": (row.get("notes") or "").strip(),
    }
    for key, limit in LENGTH_LIMITS:
        if len(values[key]) > limit:
            raise LineRefused("servers_csv_too_long", key, column=key, limit=limit)
    return hostname, values


@dataclass
class Reading:
    """A file as read: its good lines, {hostname: (line, values)}, and its errors. `fatal`:
    the file as a whole cannot be trusted (no header, broken CSV): nothing is to be applied."""

    rows: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    fatal: bool = False
    # The FIELDS the header names: the only ones the file may change on a stored server.
    columns: tuple = FIELDS
    # Lines skipped on purpose (LineNote), with their number.
    notes: list = field(default_factory=list)

    @property
    def places(self) -> list:
        """The Inventario places of the good lines (none, for the portal's own CSV)."""
        return [v[PLACE] for _line, v in self.rows.values() if v.get(PLACE) is not None]


def read(text: str) -> Reading:
    """Every line of `text`, a CSV file with a header line, checked. Each bad line is an
    error with its number; a later line for a host name already seen is one too."""
    reading = Reading()
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = {(name or "").strip().lower() for name in reader.fieldnames or []}
        missing = REQUIRED_COLUMNS - header
        if missing:
            reading.errors.append(
                LineError(1, "servers_csv_missing_columns", {"columns": ", ".join(sorted(missing))})
            )
            reading.fatal = True
            return reading
        reader.fieldnames = [(name or "").strip().lower() for name in reader.fieldnames]
        reading.columns = tuple(key for key in FIELDS if key in header)
        for row in reader:
            _read_row(reading, row, reader.line_num)
    except csv.Error as exc:
        # The file itself is broken (e.g. a field over csv.field_size_limit()): what follows
        # cannot be trusted, so nothing is imported. line_num counts the lines read before
        # the one that failed.
        reading.errors.append(
            LineError(reader.line_num + 1, "servers_csv_unreadable", {"error": str(exc)})
        )
        reading.fatal = True
    return reading


def _read_row(reading: Reading, row: dict, line: int) -> None:
    if None in row:
        reading.errors.append(LineError(line, "servers_csv_extra_fields"))
        return
    try:
        hostname, values = row_values(row)
    except LineRefused as refusal:
        reading.errors.append(LineError(line, refusal.code, refusal.params, refusal.at))
        return
    if hostname in reading.rows:
        first = reading.rows[hostname][0]
        params = {"hostname": hostname, "first": first}
        reading.errors.append(LineError(line, "servers_csv_duplicate", params, "hostname"))
        return
    reading.rows[hostname] = (line, values)


@dataclass(frozen=True)
class LineNote(LineError):
    """Line `line` is skipped on purpose (e.g. a school without a server in Inventario): a
    remark, not an error."""

    kind = "note"


@dataclass(frozen=True)
class PlannedLine:
    """A good line: a new server (`stored` None), or one the portal has, with `changes`
    {field: (old, new)} (empty: the line says what the portal has already)."""

    line: int
    hostname: str
    values: dict
    stored: dict | None
    changes: dict

    @property
    def kind(self) -> str:
        return "new" if self.stored is None else "changed" if self.changes else "unchanged"


@dataclass
class Plan:
    """What importing a file would do, line by line, to the rows it was compared with."""

    lines: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    fatal: bool = False
    # The FIELDS the file has no column for: stored servers keep them as they are.
    kept: tuple = ()
    notes: list = field(default_factory=list)

    def of_kind(self, kind: str) -> list:
        return [line for line in self.lines if line.kind == kind]

    @property
    def new(self) -> list:
        return self.of_kind("new")

    @property
    def changed(self) -> list:
        return self.of_kind("changed")

    @property
    def unchanged(self) -> list:
        return self.of_kind("unchanged")

    @property
    def to_write(self) -> int:
        """How many servers confirming would add or change."""
        return 0 if self.fatal else len(self.new) + len(self.changed)

    @property
    def writes(self) -> bool:
        """Confirming would change something."""
        return not self.fatal and any(line.kind != "unchanged" for line in self.lines)

    @property
    def notable(self) -> list:
        """The preview's table: the errors (what the reader must act on), then the changes,
        then the new servers, each in the file's order."""
        return [*self.errors, *self.changed, *self.new]

    @property
    def fingerprint(self) -> str:
        """A digest of what confirming would write: the same file compared with rows that
        changed in between (someone edited a server) gives another one."""
        writes = [
            [line.hostname, line.kind, line.values if line.stored is None else line.changes]
            for line in self.lines
            if line.kind != "unchanged"
        ]
        if self.fatal:
            writes = []
        text = json.dumps(writes, sort_keys=True, ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()


def compare(reading: Reading, stored: dict) -> Plan:
    """The plan for `reading` against `stored`, {hostname: {field: value}} of the servers
    the portal has among the file's host names and Inventario places (as `FIELDS`, plus
    `hostname` and `PLACE`, values as the rows hold them). A new server takes every field
    (an absent column as an empty cell); a stored one only those the file has a column for.

    A line from Inventario is the server of its place, else the one of its host name (which
    it then links to the place); its host name is one of the fields it changes. Refused:
    a host name whose server is linked to another place, and renaming a server to a host
    name another server has (rename that one first; two servers swapping names included)."""
    kept = tuple(key for key in FIELDS if key not in reading.columns)
    plan = Plan(errors=list(reading.errors), fatal=reading.fatal, kept=kept)
    plan.notes = list(reading.notes)
    if reading.fatal:
        return plan
    by_place = {row[PLACE]: row for row in stored.values() if row.get(PLACE) is not None}
    for hostname, (line, values) in reading.rows.items():
        place = values.get(PLACE)
        current = by_place.get(place) if place is not None else None
        current = current or stored.get(hostname)
        changes = {}
        if current is not None:
            if place is not None:
                error = _place_conflict(line, hostname, place, current, stored)
                if error:
                    plan.errors.append(error)
                    continue
            columns = (*reading.columns, PLACE)
            values = {key: value for key, value in values.items() if key in columns}
            if place is not None:
                values = {"hostname": hostname, **values}
            changes = {
                key: (current[key], value) for key, value in values.items() if current[key] != value
            }
        plan.lines.append(PlannedLine(line, hostname, values, current, changes))
    plan.errors.sort(key=lambda error: error.line)
    return plan


def _place_conflict(line: int, hostname: str, place: int, current: dict, stored: dict):
    """The LineError of an Inventario line whose server `current` cannot become its own, or
    None."""
    if current.get(PLACE) not in (None, place):
        params = {"hostname": hostname, "place": current[PLACE]}
        return LineError(line, "servers_csv_other_place", params, "server_hostname")
    if current["hostname"] != hostname and hostname in stored:
        params = {"hostname": hostname, "old": current["hostname"]}
        return LineError(line, "servers_csv_hostname_taken", params, "server_hostname")
    return None
