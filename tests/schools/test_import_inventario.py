"""`import_school_servers --inventario`: the output of docs/inventario.md's query over
Inventario's tables, imported through the school servers' CSV import."""

import csv
import io
import re
import sqlite3
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import translation

from releases.audit import AuditAction
from releases.models import AuditEvent
from schools import services
from schools.models import SchoolServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "inventario.md"
HEADER = "place_id,server_hostname,wan_ip_address,school,city,department\n"

# Inventario's tables as its db/schema.rb has them (the columns the query reads).
INVENTARIO_TABLES = """
CREATE TABLE place_types (id INTEGER PRIMARY KEY, name VARCHAR(100), internal_tag VARCHAR(100));
CREATE TABLE places (id INTEGER PRIMARY KEY, created_at DATE, name VARCHAR(100),
                     description TEXT, place_id INTEGER, place_type_id INTEGER);
CREATE TABLE school_infos (id INTEGER PRIMARY KEY, place_id INTEGER, lease_duration INTEGER,
                           server_hostname VARCHAR(255), wan_ip_address VARCHAR(255),
                           wan_netmask VARCHAR(255), wan_gateway VARCHAR(255), lease_expiry DATE);
"""


def the_documented_query() -> str:
    [query] = re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return query


def inventario_export(school_infos) -> str:
    """What the documented query gives over a small Inventario (Paraguay > Cordillera >
    Caacupé > two schools, and a school straight under Central), as psql's CSV."""
    db = sqlite3.connect(":memory:")
    db.executescript(INVENTARIO_TABLES)
    db.executemany(
        "INSERT INTO place_types VALUES (?, ?, ?)",
        [
            (1, "Pais", "country"),
            (2, "Departamento", "state"),
            (3, "Ciudad", "city"),
            (4, "Escuela", "school"),
            (5, "Turno", "shift"),
        ],
    )
    db.executemany(
        "INSERT INTO places (id, name, place_id, place_type_id) VALUES (?, ?, ?, ?)",
        [
            (1, "Paraguay", None, 1),
            (2, "Cordillera", 1, 2),
            (3, "Caacupé", 2, 3),
            (10, "Escuela Básica 12", 3, 4),
            (11, "Escuela Básica 4512", 3, 4),
            (12, "Turno mañana", 10, 5),
            (20, "Central", 1, 2),
            (21, "Colegio Nacional", 20, 4),
        ],
    )
    db.executemany(
        "INSERT INTO school_infos (place_id, server_hostname, wan_ip_address, lease_duration)"
        " VALUES (?, ?, ?, 21)",
        school_infos,
    )
    cursor = db.execute(the_documented_query())
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([column[0] for column in cursor.description])
    writer.writerows(cursor)
    return out.getvalue()


SCHOOL_INFOS = [
    (10, "XS-Caacupe-12.local", "190.104.1.12"),
    (11, None, None),  # no server yet
    (21, "xs-central-1.local", "190.104.2.1"),
]


def run(tmp_path, text: str, *args) -> tuple:
    path = tmp_path / "servers.csv"
    path.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    call_command("import_school_servers", "--inventario", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_documented_query_walks_up_to_the_city_and_the_departamento():
    assert inventario_export(SCHOOL_INFOS) == (
        HEADER
        + "10,XS-Caacupe-12.local,190.104.1.12,Escuela Básica 12,Caacupé,Cordillera\n"
        + "11,,,Escuela Básica 4512,Caacupé,Cordillera\n"
        + "21,xs-central-1.local,190.104.2.1,Colegio Nacional,,Central\n"
    )


def test_a_server_put_on_a_shift_takes_its_schools_name(db, tmp_path):
    assert inventario_export([(12, "xs-turno.local", None)]).splitlines()[1] == (
        "12,xs-turno.local,,Escuela Básica 12,Caacupé,Cordillera"
    )


def test_it_creates_the_servers_of_the_export_and_skips_a_school_without_one(db, tmp_path):
    out, err = run(tmp_path, inventario_export(SCHOOL_INFOS))

    assert out.splitlines() == [
        f"{tmp_path / 'servers.csv'}:3: skipped: place 11 (Escuela Básica 4512) has no "
        "server_hostname in Inventario; a server the portal has for it is left as it is",
        "2 created, 0 updated, 0 lines refused, 1 skipped (no server).",
    ]
    assert err == ""
    rows = SchoolServer.objects.order_by("inventario_place_id").values_list(
        "inventario_place_id", "hostname", "name", "school", "department", "address", "active"
    )
    assert list(rows) == [
        (
            10,
            "xs-caacupe-12.local",
            "xs-caacupe-12",
            "Escuela Básica 12 (Caacupé)",
            "Cordillera",
            "190.104.1.12",
            True,
        ),
        (
            21,
            "xs-central-1.local",
            "xs-central-1",
            "Colegio Nacional",
            "Central",
            "190.104.2.1",
            True,
        ),
    ]


def test_a_second_import_of_the_same_export_changes_nothing(db, tmp_path):
    export = inventario_export(SCHOOL_INFOS)
    run(tmp_path, export)
    before = list(SchoolServer.objects.order_by("pk").values())

    out, _err = run(tmp_path, export)

    assert out.splitlines()[-1] == "0 created, 2 updated, 0 lines refused, 1 skipped (no server)."
    assert list(SchoolServer.objects.order_by("pk").values()) == before
    assert AuditEvent.objects.filter(action=AuditAction.SERVERS_IMPORT).count() == 1


def test_a_host_name_changed_in_inventario_renames_the_same_server(db, tmp_path):
    run(tmp_path, inventario_export(SCHOOL_INFOS))
    server = SchoolServer.objects.get(inventario_place_id=10)
    renamed = [(10, "xs-caacupe-12b.local", "190.104.1.99"), *SCHOOL_INFOS[1:]]

    out, _err = run(tmp_path, inventario_export(renamed))

    assert out.splitlines()[-1] == "0 created, 2 updated, 0 lines refused, 1 skipped (no server)."
    server.refresh_from_db()
    assert (server.hostname, server.address) == ("xs-caacupe-12b.local", "190.104.1.99")
    assert SchoolServer.objects.count() == 2


def test_it_links_a_server_the_portal_had_by_its_host_name_and_keeps_the_portals_fields(
    db, tmp_path
):
    had = SchoolServer.objects.create(
        hostname="xs-central-1.local",
        name="central",
        school="Colegio",
        contact="Ana",
        notes="llamar antes",
        active=False,
    )

    run(tmp_path, inventario_export(SCHOOL_INFOS))

    had.refresh_from_db()
    assert (had.inventario_place_id, had.school, had.department) == (
        21,
        "Colegio Nacional",
        "Central",
    )
    assert (had.name, had.contact, had.notes, had.active) == (
        "central",
        "Ana",
        "llamar antes",
        False,
    )


def test_bad_lines_are_reported_by_number_and_the_good_ones_imported(db, tmp_path, capsys):
    SchoolServer.objects.create(hostname="xs-taken.local", school="Otra", inventario_place_id=99)
    text = HEADER + (
        "10,xs-caacupe-12.local,190.104.1.12,Escuela Básica 12,Caacupé,Cordillera\n"
        "x7,xs-bad-place.local,,Escuela,,\n"
        "11,bad host!,,Escuela Básica 4512,Caacupé,Cordillera\n"
        "12,xs-luque-1.local,n/a,Escuela Luque,Luque,Central\n"
        "10,xs-caacupe-13.local,,Escuela Básica 12,Caacupé,Cordillera\n"
        "13,xs-taken.local,,Escuela 13,,Central\n"
        "14,xs-san-lorenzo.local,,,San Lorenzo,Central\n"
        "15,xs-caacupe-12.local,,Escuela 15,,Central\n"
        "16,xs-luque-2.local,,Escuela 16,Luque,Central,extra\n"
    )
    path = tmp_path / "servers.csv"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(CommandError) as caught:
        call_command("import_school_servers", "--inventario", str(path))

    assert caught.value.returncode == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"{path}:3: place_id 'x7' is not a whole number from 0 to 2147483647",
        f"{path}:4: server_hostname 'bad host!' is not a host name",
        f"{path}:5: wan_ip_address 'n/a' is not an IP address",
        f"{path}:6: place 10 already appears on line 2",
        f"{path}:7: xs-taken.local is the server of Inventario place 99 on the portal",
        f"{path}:8: school is empty",
        f"{path}:9: xs-caacupe-12.local already appears on line 2",
        f"{path}:10: more fields than columns",
    ]
    assert captured.out == "1 created, 0 updated, 8 lines refused, 0 skipped (no server).\n"
    assert SchoolServer.objects.get(inventario_place_id=10).hostname == "xs-caacupe-12.local"
    assert SchoolServer.objects.count() == 2


def test_a_rename_onto_another_servers_host_name_is_refused(db, tmp_path):
    run(tmp_path, inventario_export(SCHOOL_INFOS))
    swapped = [(10, "xs-central-1.local", None), (21, "xs-caacupe-12.local", None)]

    result = services.servers_import_csv(text=inventario_export(swapped), from_inventario=True)

    taken = "another server has that host name"
    assert result.errors == [
        (2, f"cannot rename xs-caacupe-12.local to xs-central-1.local: {taken}"),
        (3, f"cannot rename xs-central-1.local to xs-caacupe-12.local: {taken}"),
    ]
    assert set(SchoolServer.objects.values_list("inventario_place_id", "hostname")) == {
        (10, "xs-caacupe-12.local"),
        (21, "xs-central-1.local"),
    }


def test_a_school_without_a_server_leaves_the_portals_server_for_it_alone(db, tmp_path):
    run(tmp_path, inventario_export(SCHOOL_INFOS))
    gone = [(10, "", None), *SCHOOL_INFOS[1:]]

    out, _err = run(tmp_path, inventario_export(gone))

    assert out.splitlines()[-1] == "0 created, 1 updated, 0 lines refused, 2 skipped (no server)."
    kept = SchoolServer.objects.get(inventario_place_id=10)
    assert (kept.hostname, kept.active) == ("xs-caacupe-12.local", True)


def test_it_reads_the_mysql_clients_tab_separated_output(db, tmp_path):
    text = (
        "place_id\tserver_hostname\twan_ip_address\tschool\tcity\tdepartment\n"
        '10\txs-caacupe-12.local\t190.104.1.12\tEscuela "San José"\tCaacupé\tCordillera\n'
        "11\t\t\tEscuela Básica 4512\tCaacupé\tCordillera\n"
    )

    out, _err = run(tmp_path, text)

    assert out.splitlines()[-1] == "1 created, 0 updated, 0 lines refused, 1 skipped (no server)."
    assert SchoolServer.objects.get().school == 'Escuela "San José" (Caacupé)'


def test_a_file_without_the_querys_columns_imports_nothing(db, tmp_path):
    with pytest.raises(CommandError):
        run(tmp_path, "hostname,school\nxs-caacupe-1.local,Escuela 1\n")

    result = services.servers_import_csv(text="hostname,school\nx,y\n", from_inventario=True)
    assert result.errors == [
        (1, "missing columns: place_id, server_hostname, wan_ip_address, city, department")
    ]
    assert not SchoolServer.objects.exists()


def test_the_plan_shows_a_rename_before_anything_is_written(db, tmp_path):
    run(tmp_path, inventario_export(SCHOOL_INFOS))
    renamed = [(10, "xs-caacupe-12b.local", "190.104.1.12"), *SCHOOL_INFOS[1:]]

    plan = services.servers_import_plan(text=inventario_export(renamed), from_inventario=True)

    [changed] = plan.changed
    assert changed.changes == {"hostname": ("xs-caacupe-12.local", "xs-caacupe-12b.local")}
    assert [note.line for note in plan.notes] == [3]
    assert SchoolServer.objects.filter(hostname="xs-caacupe-12.local").exists()


def test_the_import_is_audited_as_one_event_with_who_ran_it_and_the_renames(db, cast, tmp_path):
    run(tmp_path, inventario_export(SCHOOL_INFOS), "--by", "root")
    renamed = [(10, "xs-caacupe-12b.local", "190.104.1.12"), *SCHOOL_INFOS[1:]]
    run(tmp_path, inventario_export(renamed), "--by", "root")

    first, second = AuditEvent.objects.filter(action=AuditAction.SERVERS_IMPORT).order_by("pk")
    assert (first.actor, first.code) == (cast.root, "servers_imported_inventario")
    assert first.params["created"] == 2
    assert second.params == {
        "created": 0,
        "updated": 2,
        "refused": 0,
        "activated": 0,
        "deactivated": 0,
        "active_changes": {},
        "renamed": 1,
        "hostname_changes": {"xs-caacupe-12.local": "xs-caacupe-12b.local"},
        "skipped": 1,
    }
    with translation.override("en"):
        assert second.message == (
            "School servers imported from Inventario. Added: 0; updated: 2; host names "
            "changed: 1; lines refused: 0; schools without a server skipped: 1."
        )
    with translation.override("es"):
        assert second.message.startswith("Servidores escolares importados de Inventario.")


def test_a_dry_run_prints_the_plan_and_writes_nothing(db, tmp_path):
    run(tmp_path, inventario_export(SCHOOL_INFOS))
    renamed = [(10, "xs-caacupe-12b.local", "190.104.1.12"), *SCHOOL_INFOS[1:]]
    renamed += [(12, "xs-turno.local", None)]
    before = list(SchoolServer.objects.order_by("pk").values())

    out, _err = run(tmp_path, inventario_export(renamed), "--dry-run")

    path = tmp_path / "servers.csv"
    assert out.splitlines() == [
        f"{path}:2: xs-caacupe-12.local changes: hostname: 'xs-caacupe-12.local' -> "
        "'xs-caacupe-12b.local'",
        f"{path}:3: skipped: place 11 (Escuela Básica 4512) has no server_hostname in "
        "Inventario; a server the portal has for it is left as it is",
        f"{path}:4: new server xs-turno.local",
        "Dry run, nothing written: 1 to create, 1 to change, 1 unchanged, 0 lines refused, "
        "1 skipped.",
    ]
    assert list(SchoolServer.objects.order_by("pk").values()) == before
