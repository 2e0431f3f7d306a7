"""schools.servers_csv, the reading and comparing both the import page and the import
command use: data in, a plan out, no database."""

import pytest
from django.utils import translation

from releases.models import AuditEvent
from releases.reasons import Refused
from schools import servers_csv, services
from schools.models import SchoolServer

HEADER = "hostname,name,school,department,contact,address,active,notes\n"
STORED = {
    "xs-1.local": {
        "name": "xs-1",
        "school": "Escuela 1",
        "department": "Central",
        "contact": "",
        "address": "10.0.0.1",
        "active": True,
        "notes": "",
    }
}


def plan(text, stored=STORED):
    return servers_csv.compare(servers_csv.read(text), stored)


def test_it_sorts_lines_into_new_changed_unchanged_and_errors():
    result = plan(
        HEADER
        + "xs-1.local,,Escuela 1,Central,,10.0.0.1,sí,\n"
        + "XS-2.local,,Escuela 2,,,,,\n"
        + "xs-3.local,,,,,,,\n"
    )
    assert [(line.line, line.kind) for line in result.lines] == [(2, "unchanged"), (3, "new")]
    assert result.new[0].hostname == "xs-2.local"
    assert result.new[0].values["name"] == "xs-2"
    [error] = result.errors
    assert (error.line, error.code, error.column) == (4, "servers_csv_school_empty", "school")
    # The preview lists what the reader must act on first.
    assert [entry.kind for entry in result.notable] == ["error", "new"]
    assert result.to_write == 1 and result.writes


def test_a_change_names_each_field_with_its_old_and_new_value():
    result = plan(HEADER + "xs-1.local,,Escuela Uno,Central,,,no,\n")
    assert result.changed[0].changes == {
        "school": ("Escuela 1", "Escuela Uno"),
        "address": ("10.0.0.1", None),
        "active": (True, False),
    }


def test_an_error_says_what_and_where_in_english_and_in_the_readers_language():
    [error] = plan(HEADER + "xs-1.local,,Escuela,,,,quizás,\n").errors
    assert error.english == "active must be yes or no, not 'quizás'"
    assert error.column == "active"
    # Rendered when read, in the active language (Spanish, the portal's default; said here
    # so that a test before this one leaving another language active changes nothing).
    with translation.override("es"):
        assert error.message == "active debe ser sí o no, y dice 'quizás'"
        assert "Escriba sí o no" in error.hint


def test_a_file_without_the_columns_is_fatal_and_writes_nothing():
    result = plan("host,escuela\nxs-1.local,x\n")
    assert result.fatal and not result.writes and result.to_write == 0
    assert [(e.line, e.english) for e in result.errors] == [
        (1, "missing columns: hostname, school")
    ]


def test_the_fingerprint_follows_what_would_be_written_only():
    text = HEADER + "xs-1.local,,Escuela Uno,Central,,10.0.0.1,yes,\nxs-2.local,,E,,,,,\n"
    first = plan(text).fingerprint
    assert plan(text).fingerprint == first
    # An unchanged line or an error more does not matter; another change does.
    assert plan(text + "xs-1.local,,x,,,,,\n").fingerprint == first
    edited = {"xs-1.local": {**STORED["xs-1.local"], "school": "Escuela Otra"}}
    assert plan(text, edited).fingerprint != first


def test_an_exported_file_reads_back_as_unchanged():
    stored = {"xs-1.local": {**STORED["xs-1.local"], "name": "=1+2", "notes": "-nota"}}
    values = stored["xs-1.local"]
    row = [
        "xs-1.local",
        *(servers_csv.spreadsheet_safe(values[key]) for key in ("name", "school", "department")),
        "",
        values["address"],
        "yes",
        servers_csv.spreadsheet_safe(values["notes"]),
    ]
    result = plan(HEADER + ",".join(row) + "\n", stored)
    assert [line.kind for line in result.lines] == ["unchanged"]


def test_the_service_refuses_a_plan_that_is_no_longer_the_previewed_one(db):
    SchoolServer.objects.create(hostname="xs-1.local", name="xs-1", school="Escuela 1")
    text = HEADER + "xs-1.local,,Escuela Uno,,,,yes,\n"
    previewed = services.servers_import_plan(text=text).fingerprint
    SchoolServer.objects.update(school="Escuela Otra")

    with pytest.raises(Refused) as refused:
        services.servers_import_csv(text=text, expected=previewed)

    assert refused.value.code == "servers_import_stale"
    assert SchoolServer.objects.get().school == "Escuela Otra"
    now = services.servers_import_plan(text=text).fingerprint
    result = services.servers_import_csv(text=text, expected=now)
    assert (result.created, result.updated, result.changed) == (0, 1, 1)
    assert SchoolServer.objects.get().school == "Escuela Uno"


# --- Columns the file leaves out --------------------------------------------------------------


def test_a_column_the_file_leaves_out_keeps_what_the_portal_has():
    stored = {
        "xs-1.local": {
            **STORED["xs-1.local"],
            "contact": "Ana",
            "active": False,
            "notes": "cerrada por obras",
        }
    }

    result = plan("hostname,school\nxs-1.local,Escuela 1\n", stored)

    assert [line.kind for line in result.lines] == ["unchanged"]
    assert result.kept == ("name", "department", "contact", "address", "active", "notes")
    assert not result.writes


def test_a_file_changes_only_the_columns_it_has():
    stored = {"xs-1.local": {**STORED["xs-1.local"], "active": False, "notes": "nota"}}

    result = plan("hostname,school,department\nxs-1.local,Escuela Uno,\n", stored)

    assert result.changed[0].changes == {
        "school": ("Escuela 1", "Escuela Uno"),
        "department": ("Central", ""),
    }
    assert set(result.changed[0].values) == {"school", "department"}


def test_a_new_server_gets_the_defaults_for_the_columns_the_file_leaves_out():
    [line] = plan("hostname,school\nxs-9.local,Escuela 9\n").new
    assert line.values == {
        "name": "xs-9",
        "school": "Escuela 9",
        "department": "",
        "contact": "",
        "address": None,
        "active": True,
        "notes": "",
    }


def test_an_empty_cell_gives_a_new_server_the_models_defaults(db):
    # What a new server gets for a column left out (an empty cell's value) is what the
    # model would give it.
    [line] = plan("hostname,school\nxs-9.local,Escuela 9\n").new
    for key in ("department", "contact", "address", "active", "notes"):
        assert line.values[key] == SchoolServer._meta.get_field(key).get_default(), key


# --- Control characters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "column", "char"),
    [
        ("xs-1.local,,Escuela\x00 1,,,,,\n", "school", "U+0000"),
        ("xs-1.local,,Escuela 1,,,,,nota\x00\n", "notes", "U+0000"),
        ("xs-1.local,,Escuela 1,Central\x1b,,,,\n", "department", "U+001B"),
        ('xs-1.local,,"Escuela\n1",,,,,\n', "school", "U+000A"),
        ("xs-1.local,xs\x7f,Escuela 1,,,,,\n", "name", "U+007F"),
        ("xs-1.local,,Escuela 1,,Ana\x85,,,\n", "contact", "U+0085"),
    ],
)
def test_a_value_with_a_control_character_is_refused(line, column, char):
    result = plan(HEADER + line)
    assert not result.lines
    [error] = result.errors
    # The line number is the one the record ends on (csv's line_num), as for every error.
    assert error.line == 1 + line.count("\n")
    assert (error.code, error.column) == ("servers_csv_control_char", column)
    assert error.english == f"{column} holds a control character ({char})"
    with translation.override(None):
        assert "invisible character" in error.hint


def test_tabs_and_the_notes_line_breaks_are_not_control_characters_to_refuse():
    result = plan(HEADER + 'xs-1.local,,Escuela\t1,,,,,"una\r\nnota\tcon\nlíneas"\n')
    assert not result.errors
    assert result.changed[0].changes["notes"] == ("", "una\r\nnota\tcon\nlíneas")


def test_a_control_character_in_a_column_the_import_ignores_is_not_refused():
    result = plan(HEADER.strip() + ",last_error\nxs-1.local,,Escuela 1,Central,,10.0.0.1,,,x\x00\n")
    assert not result.errors
    assert [line.kind for line in result.lines] == ["unchanged"]


# --- The service ------------------------------------------------------------------------------


def test_a_new_server_added_by_a_concurrent_import_makes_the_plan_stale(db, monkeypatch):
    # Confirming the same preview twice at once: the lock holds only servers that exist, so
    # both imports plan xs-2 as new; the second to insert it must be refused, not a 500.
    SchoolServer.objects.create(hostname="xs-1.local", name="xs-1", school="Escuela 1")
    text = HEADER + "xs-1.local,,Escuela Uno,,,,yes,\nxs-2.local,,Escuela 2,,,,yes,\n"
    previewed = services.servers_import_plan(text=text).fingerprint
    stored_values = services._stored_values

    def then_the_other_import_inserts(hostnames, **kwargs):
        values = stored_values(hostnames, **kwargs)
        SchoolServer.objects.create(hostname="xs-2.local", name="other", school="Otra")
        return values

    monkeypatch.setattr(services, "_stored_values", then_the_other_import_inserts)

    with pytest.raises(Refused) as refused:
        services.servers_import_csv(text=text, expected=previewed)

    assert refused.value.code == "servers_import_stale"
    # Nothing of this import was written (here the "other" insert shared its transaction).
    assert SchoolServer.objects.get(hostname="xs-1.local").school == "Escuela 1"
    assert not AuditEvent.objects.exists()
