"""Inventario's school servers, as the query in docs/inventario.md exports them, read into the
school servers' CSV reading (`servers_csv.Reading`), so the import's plan, preview and
audited apply are the portal's own CSV import's. Pure module: no ORM, no I/O.

A line is one `school_infos` row: `place_id` (its school's `places.id`, kept on the server
as `inventario_place_id`), `server_hostname` → hostname, `wan_ip_address` → address,
`school` and `city` → school (`Escuela 12 (Caacupé)`: the portal has no city, and school
names repeat across cities), `department` (the Departamento) → department. The other fields
(name, contact, active, notes) are not in the file: the portal keeps what it has, a new
server gets the default. A school without a server host name is skipped with a note (it has
no server yet, or Inventario keeps only its activation lease); a server the portal has for
it is left alone.

The file is CSV with a header line (psql's `\\copy ... csv header`), or tab-separated with
no quoting (`mysql --batch --raw`): a header line holding a tab says which."""

import csv
import io

from . import servers_csv
from .servers_csv import PLACE, LineError, LineNote, LineRefused, Reading

COLUMNS = ("place_id", "server_hostname", "wan_ip_address", "school", "city", "department")
# The portal's column a value goes to → Inventario's, to name the column to fix; and the
# refusals whose message names the portal's column → the same, naming Inventario's.
SOURCE_COLUMN = {"hostname": "server_hostname", "address": "wan_ip_address"}
SOURCE_CODE = {
    "servers_csv_hostname": "inventario_hostname",
    "servers_csv_address": "inventario_address",
}
# What the portal's column holds (Inventario's ids are MySQL INT, no larger).
PLACE_MAX = 2**31 - 1


def read(text: str) -> Reading:
    """Every line of `text`, the query's output, checked; a reading of its good lines (by
    host name, each with its place), its errors and its skipped lines, by line number."""
    text = text.lstrip("\ufeff")
    reading = Reading(columns=("school", "department", "address"))
    first_line = text.split("\n", 1)[0]
    if "\t" in first_line:
        reader = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.DictReader(io.StringIO(text))
    places = {}
    try:
        header = [(name or "").strip().lower() for name in reader.fieldnames or []]
        missing = [column for column in COLUMNS if column not in header]
        if missing:
            params = {"columns": ", ".join(missing)}
            reading.errors.append(LineError(1, "servers_csv_missing_columns", params))
            reading.fatal = True
            return reading
        reader.fieldnames = header
        for row in reader:
            _read_row(reading, places, row, reader.line_num)
    except csv.Error as exc:
        # As servers_csv.read: a broken file is not trusted at all.
        reading.errors.append(
            LineError(reader.line_num + 1, "servers_csv_unreadable", {"error": str(exc)})
        )
        reading.fatal = True
    return reading


def _read_row(reading: Reading, places: dict, row: dict, line: int) -> None:
    if None in row:
        reading.errors.append(LineError(line, "servers_csv_extra_fields"))
        return
    row = {key: (value or "").strip() for key, value in row.items()}
    place_text = row["place_id"]
    if not (place_text.isascii() and place_text.isdigit()) or int(place_text) > PLACE_MAX:
        params = {"value": repr(place_text)}
        reading.errors.append(LineError(line, "inventario_place_id", params, "place_id"))
        return
    place = int(place_text)
    if place in places:
        params = {"place": place, "first": places[place]}
        reading.errors.append(LineError(line, "inventario_duplicate_place", params, "place_id"))
        return
    places[place] = line
    if not row["server_hostname"]:
        params = {"place": place, "school": row["school"]}
        reading.notes.append(LineNote(line, "inventario_no_server", params, "server_hostname"))
        return
    school = f"{row['school']} ({row['city']})" if row["school"] and row["city"] else row["school"]
    portal_row = {
        "hostname": row["server_hostname"],
        "address": row["wan_ip_address"],
        "school": school,
        "department": row["department"],
    }
    try:
        hostname, values = servers_csv.row_values(portal_row)
    except LineRefused as refusal:
        at = SOURCE_COLUMN.get(refusal.at, refusal.at)
        code = SOURCE_CODE.get(refusal.code, refusal.code)
        reading.errors.append(LineError(line, code, refusal.params, at))
        return
    if hostname in reading.rows:
        params = {"hostname": hostname, "first": reading.rows[hostname][0]}
        reading.errors.append(LineError(line, "servers_csv_duplicate", params, "server_hostname"))
        return
    reading.rows[hostname] = (line, {**values, PLACE: place})
