"""Coordinators import school servers from a CSV file in the console: a preview first, line
by line, that writes nothing; then the confirmation imports exactly the previewed file,
through schools.services, audited; nobody else can."""

import re
from html import unescape

import pytest
from django.core import signing
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from releases.audit import AuditAction
from releases.models import AuditEvent
from schools import forms as school_forms
from schools import services, views
from schools.models import SchoolServer
from tests.factories import english_client

from ..hostile import snapshot

HEADER = "hostname,name,school,department,contact,address,active,notes\n"
# Line 2 changes the stored server, line 3 adds one, line 4 is unchanged... once line 2 is
# applied; line 5 is bad.
CSV = (
    HEADER
    + "xs-caacupe-1.local,xs1,Escuela Uno,Cordillera,Ana,10.1.2.3,no,\n"
    + "xs-luque-1.local,,Escuela Luque,Central,,,yes,\n"
    + "xs-itaugua-1.local,xs-itaugua-1,Escuela Itauguá,Central,,,yes,\n"
    + "xs-bad!,,Escuela 4,Central,,,yes,\n"
)

PREVIEW = reverse("schools:servers_import")
CONFIRM = reverse("schools:servers_import_confirm")


@pytest.fixture
def servers(db):
    return [
        SchoolServer.objects.create(
            hostname="xs-caacupe-1.local", name="xs1", school="Escuela 1", address="10.1.2.3"
        ),
        SchoolServer.objects.create(
            hostname="xs-itaugua-1.local", name="xs-itaugua-1", school="Escuela Itauguá",
            department="Central",
        ),
    ]  # fmt: skip


def login(user):
    client = english_client()
    client.force_login(user)
    return client


def upload(client, data, name="servers.csv"):
    if isinstance(data, str):
        data = data.encode()
    return client.post(PREVIEW, {"file": SimpleUploadedFile(name, data, "text/csv")})


def payload_of(response) -> str:
    match = re.search(r'name="payload" value="([^"]*)"', response.content.decode())
    assert match, "the preview has no confirm form"
    return unescape(match.group(1))


def test_the_preview_shows_each_line_and_writes_nothing(cast, servers):
    client = login(cast.dave)
    before = snapshot.take()

    response = upload(client, CSV)

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    plan = response.context["plan"]
    assert [line.hostname for line in plan.new] == ["xs-luque-1.local"]
    assert [line.hostname for line in plan.changed] == ["xs-caacupe-1.local"]
    assert [line.hostname for line in plan.unchanged] == ["xs-itaugua-1.local"]
    assert plan.changed[0].changes == {
        "school": ("Escuela 1", "Escuela Uno"),
        "department": ("", "Cordillera"),
        "contact": ("", "Ana"),
        "active": (True, False),
    }
    body = response.content.decode()
    assert 'id="import-new">1<' in body and 'id="import-errors">1<' in body
    assert "<code>active</code>: yes → no" in body
    assert "<code>school</code>: “Escuela 1” → “Escuela Uno”" in body
    # The bad line: its number, its column, what is wrong and what to do.
    row = body[body.index('data-line="5"') :]
    row = row[: row.index("</tr>")]
    assert "<code>hostname</code>" in row and "is not a host name" in unescape(row)
    assert "letters, digits, dots and dashes" in row
    assert "1 line has an error and will be skipped" in body
    assert "Nothing has been written yet." in body
    snapshot.assert_unchanged(before)


def test_confirming_imports_the_previewed_file_audited_as_the_coordinator(cast, servers):
    client = login(cast.dave)
    payload = payload_of(upload(client, CSV))
    assert not AuditEvent.objects.exists()

    response = client.post(CONFIRM, {"payload": payload}, follow=True)

    assert response.redirect_chain == [(reverse("schools:overview"), 302)]
    assert "Imported. Servers added: 1; changed: 1; lines skipped: 1." in response.content.decode()
    caacupe = SchoolServer.objects.get(hostname="xs-caacupe-1.local")
    assert (caacupe.school, caacupe.active) == ("Escuela Uno", False)
    assert SchoolServer.objects.get(hostname="xs-luque-1.local").name == "xs-luque-1"
    assert not SchoolServer.objects.filter(hostname__startswith="xs-bad").exists()
    [event] = AuditEvent.objects.all()
    assert (event.action, event.actor, event.code) == (
        AuditAction.SERVERS_IMPORT,
        cast.dave,
        "servers_imported",
    )
    assert event.params["created"] == 1 and event.params["refused"] == 1
    assert event.params["active_changes"] == {"xs-caacupe-1.local": [True, False]}


def test_a_superuser_may_import_too(cast, servers):
    client = login(cast.root)
    assert client.get(PREVIEW).status_code == 200
    client.post(CONFIRM, {"payload": payload_of(upload(client, CSV))})
    assert AuditEvent.objects.get().actor == cast.root


@pytest.mark.parametrize("who", ["alice", "carol", "eve"])
def test_only_coordinators_import(cast, servers, who):
    coordinator_payload = payload_of(upload(login(cast.dave), CSV))
    client = login(getattr(cast, who))
    before = snapshot.take()

    assert client.get(PREVIEW).status_code == 403
    assert upload(client, CSV).status_code == 403
    assert client.post(CONFIRM, {"payload": coordinator_payload}).status_code == 403

    snapshot.assert_unchanged(before)
    overview = client.get(reverse("schools:overview")).content.decode()
    assert 'id="servers-import-link"' not in overview


def test_anonymous_visitors_are_sent_to_log_in(client, servers):
    for response in (client.get(PREVIEW), upload(client, CSV), client.post(CONFIRM, {})):
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")
    assert not AuditEvent.objects.exists()


def test_a_coordinator_sees_the_import_button(cast, servers):
    overview = login(cast.dave).get(reverse("schools:overview")).content.decode()
    assert f'href="{PREVIEW}"' in overview


def test_a_confirmation_with_another_file_is_refused(cast, servers):
    client = login(cast.dave)
    payload = payload_of(upload(client, CSV))
    content = signing.loads(payload, salt=school_forms.SERVERS_CSV_SALT)
    forged = payload.replace(payload[-5:], "AAAAA" if payload[-5:] != "AAAAA" else "BBBBB")
    # The file changed but kept the previewed fingerprint: not signed by the portal.
    unsigned = signing.dumps({**content, "text": CSV.replace("Uno", "Dos")}, salt="other")
    before = list(SchoolServer.objects.order_by("pk").values())

    for bad in (forged, unsigned, "", "not a payload"):
        response = client.post(CONFIRM, {"payload": bad}, follow=True)
        assert response.redirect_chain == [(PREVIEW, 302)]
        said = response.content.decode()
        assert "is not the one previewed" in said or "This field is required." in said

    assert list(SchoolServer.objects.order_by("pk").values()) == before
    assert not AuditEvent.objects.exists()


def test_a_stale_preview_is_refused_and_shown_again(cast, servers):
    client = login(cast.dave)
    payload = payload_of(upload(client, CSV))
    # Someone edits the server the file changes, after the preview.
    SchoolServer.objects.filter(hostname="xs-caacupe-1.local").update(school="Escuela Otra")

    response = client.post(CONFIRM, {"payload": payload})

    assert response.status_code == 200
    body = response.content.decode()
    assert "changed since this preview was made" in body
    assert "<code>school</code>: “Escuela Otra” → “Escuela Uno”" in body
    assert SchoolServer.objects.get(hostname="xs-caacupe-1.local").school == "Escuela Otra"
    assert not AuditEvent.objects.exists()
    # The new preview confirms.
    client.post(CONFIRM, {"payload": payload_of(response)})
    assert SchoolServer.objects.get(hostname="xs-caacupe-1.local").school == "Escuela Uno"


def test_an_expired_preview_is_refused(cast, servers, monkeypatch):
    client = login(cast.dave)
    payload = payload_of(upload(client, CSV))
    monkeypatch.setattr(school_forms, "SERVERS_CSV_PREVIEW_SECONDS", -1)

    response = client.post(CONFIRM, {"payload": payload}, follow=True)

    assert "more than an hour old" in response.content.decode()
    assert not AuditEvent.objects.exists()


def test_a_long_preview_lists_the_errors_first_and_counts_the_rest(cast, servers, monkeypatch):
    monkeypatch.setattr(views, "PREVIEW_LINES", 2)

    response = upload(login(cast.dave), CSV)

    body = response.content.decode()
    assert [entry.line for entry in response.context["entries"]] == [5, 2]
    assert 'id="import-new">1<' in body
    assert "1 more line is not listed here" in body


def test_a_file_that_changes_nothing_offers_no_confirmation(cast, servers):
    text = HEADER + "xs-itaugua-1.local,xs-itaugua-1,Escuela Itauguá,Central,,,yes,\n"
    response = upload(login(cast.dave), text)
    body = response.content.decode()
    assert "would change nothing" in body
    assert 'id="import-confirm"' not in body


BAD_FILES = [
    ("latin-1", (HEADER + "xs-2,,Caacupé,,,,yes,\n").encode("latin-1"), "is not UTF-8 text"),
    ("utf-16", (HEADER + "xs-2,,Escuela,,,,yes,\n").encode("utf-16"), "is not UTF-8 text"),
    ("spreadsheet", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xa4", "is not UTF-8 text"),
    ("empty", b"", "The submitted file is empty."),
    ("blank", b"\n \n", "The file is empty."),
    ("no-header", b"xs-2.local,Escuela\n", "Line 1: missing columns: hostname, school."),
    ("not-csv", b"Querida Ana:\nte mando la lista.\n", "missing columns"),
    (
        "broken-csv",
        (HEADER + "xs-2,,Escuela,,,,," + "n" * 200_000 + "\n").encode(),
        "Line 2: this line cannot be read as CSV",
    ),
    ("too-large", HEADER.encode() + b"x" * (2 * 1024 * 1024), "larger than 2 MiB"),
]


@pytest.mark.parametrize(("id_", "data", "said"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_file_is_refused_on_the_form_and_changes_nothing(cast, servers, id_, data, said):
    client = login(cast.dave)
    before = snapshot.take()

    response = upload(client, data)

    assert response.status_code == 200
    errors = response.context["form"].errors["file"]
    assert any(said in message for message in errors), errors
    assert 'data-field="file"' in response.content.decode()
    snapshot.assert_unchanged(before)


def test_errors_are_shown_in_spanish(cast, servers):
    client = Client()  # the portal's default language
    client.force_login(cast.dave)
    body = unescape(upload(client, CSV).content.decode())
    assert "Vista previa" in body
    row = body[body.index('data-line="5"') :]
    assert "no es un nombre de host" in row[: row.index("</tr>")]


def test_the_overview_export_imports_back_as_unchanged(cast, servers):
    # The page tells coordinators to start from the export: importing it as it is must
    # change nothing, notes and an inactive server included.
    SchoolServer.objects.filter(hostname="xs-caacupe-1.local").update(
        notes="Llamar antes de ir.\r\nLlave en dirección.", contact="-Ana", active=False
    )
    SchoolServer.objects.filter(hostname="xs-itaugua-1.local").update(notes="=nota")
    client = login(cast.dave)
    exported = client.get(reverse("schools:overview") + "?format=csv").content
    before = snapshot.take()

    response = upload(client, exported)

    plan = response.context["plan"]
    assert not plan.errors and not plan.kept
    assert [line.kind for line in plan.lines] == ["unchanged", "unchanged"]
    assert "would change nothing" in response.content.decode()
    snapshot.assert_unchanged(before)


def test_a_file_without_some_columns_keeps_what_the_servers_have_there(cast, servers):
    SchoolServer.objects.filter(hostname="xs-itaugua-1.local").update(
        contact="Ana", notes="cerrada por obras", active=False
    )
    client = login(cast.dave)
    text = (
        "hostname,school\n"
        "xs-itaugua-1.local,Escuela Itauguá Guasu\n"
        "xs-luque-1.local,Escuela Luque\n"
    )

    response = upload(client, text)

    plan = response.context["plan"]
    assert plan.changed[0].changes == {"school": ("Escuela Itauguá", "Escuela Itauguá Guasu")}
    body = response.content.decode()
    assert "The file has no column for name, department, contact, address, active, notes" in body
    client.post(CONFIRM, {"payload": payload_of(response)})
    itaugua = SchoolServer.objects.get(hostname="xs-itaugua-1.local")
    assert (itaugua.school, itaugua.department, itaugua.contact) == (
        "Escuela Itauguá Guasu",
        "Central",
        "Ana",
    )
    assert (itaugua.notes, itaugua.active) == ("cerrada por obras", False)
    luque = SchoolServer.objects.get(hostname="xs-luque-1.local")
    assert (luque.name, luque.active, luque.notes, luque.address) == ("xs-luque-1", True, "", None)
    assert AuditEvent.objects.get().params["active_changes"] == {}


def test_a_preview_confirmed_twice_at_once_is_refused_and_shown_again(cast, servers, monkeypatch):
    client = login(cast.dave)
    payload = payload_of(upload(client, CSV))
    stored_values = services._stored_values

    # The other confirmation inserts the new server after this one read the rows (the
    # lock holds only rows that exist).
    def then_the_other_confirmation_inserts(hostnames, **kwargs):
        values = stored_values(hostnames, **kwargs)
        if kwargs.get("lock"):
            SchoolServer.objects.create(hostname="xs-luque-1.local", name="x", school="Otra")
        return values

    monkeypatch.setattr(services, "_stored_values", then_the_other_confirmation_inserts)

    response = client.post(CONFIRM, {"payload": payload})

    assert response.status_code == 200
    assert "changed since this preview was made" in response.content.decode()
    assert SchoolServer.objects.get(hostname="xs-caacupe-1.local").school == "Escuela 1"
    assert not AuditEvent.objects.exists()


def test_a_value_with_a_nul_is_an_error_on_its_line(cast, servers):
    text = HEADER + "xs-luque-1.local,,Escuela\x00 Luque,Central,,,yes,\n"
    client = login(cast.dave)
    before = snapshot.take()

    response = upload(client, text)

    assert response.status_code == 200
    row = unescape(response.content.decode())
    row = row[row.index('data-line="2"') :]
    row = row[: row.index("</tr>")]
    assert "<code>school</code>: school holds a control character (U+0000)" in row
    assert "invisible character" in row
    assert not response.context["plan"].writes
    snapshot.assert_unchanged(before)
