"""A coordinator adds a school server in the console, in Spanish, issues its report token
and sees it once, and imports servers from a CSV file after a preview; the audit log names
the coordinator."""

import pytest

from releases.models import AuditEvent
from schools.models import SchoolServer

from ..factories import make_user
from .test_upload_in_browser import log_in

pytestmark = pytest.mark.browser


def test_a_coordinator_adds_a_server_and_issues_its_token(page, live_server):
    coordinator = make_user("celia", "coordinators")
    log_in(page, live_server, "celia")

    page.goto(f"{live_server.url}/schools/")
    page.click("#server-add-link")
    page.fill("#id_hostname", "xs-luque-2.local")
    page.fill("#id_school", "Escuela Luque 2")
    page.fill("#id_address", "10.9")
    page.click("#server-save")
    # A specific reason, in Spanish, and the typed values kept.
    assert "IPv4" in page.locator("[data-field=address]").inner_text()
    assert page.input_value("#id_school") == "Escuela Luque 2"
    assert not SchoolServer.objects.exists()

    page.fill("#id_address", "10.9.0.1")
    page.click("#server-save")
    page.wait_for_url(f"{live_server.url}/schools/xs-luque-2.local/")
    assert "ninguno" in page.locator("#server-token").inner_text()

    page.click("#server-token-button")
    conf = page.locator("#token-conf").inner_text()
    assert conf.startswith(f"PORTAL_URL={live_server.url}\nPORTAL_TOKEN=")
    token = conf.rsplit("=", 1)[1].strip()
    assert SchoolServer.objects.by_token(token).hostname == "xs-luque-2.local"

    page.goto(f"{live_server.url}/schools/xs-luque-2.local/")
    assert token not in page.content()
    assert token[:8] in page.locator("#server-token").inner_text()
    actors = set(AuditEvent.objects.values_list("actor", flat=True))
    assert actors == {coordinator.pk}

    # Replacing the token asks first, in Spanish, and the old token stops working.
    page.click("#server-token-button")
    assert "deja de funcionar" in page.locator("#token-confirm").inner_text()
    page.click("#token-replace")
    new = page.locator("#token-conf").inner_text().rsplit("=", 1)[1].strip()
    assert new != token
    assert SchoolServer.objects.by_token(token) is None
    assert SchoolServer.objects.by_token(new).hostname == "xs-luque-2.local"


def test_a_coordinator_previews_a_csv_import_and_confirms_it(page, live_server):
    coordinator = make_user("celia", "coordinators")
    SchoolServer.objects.create(
        hostname="xs-caacupe-1.local", name="xs1", school="Escuela 1", address="10.1.2.3"
    )
    csv = (
        "hostname,name,school,department,contact,address,active,notes\n"
        "xs-caacupe-1.local,xs1,Escuela Uno,Cordillera,,10.1.2.3,no,\n"
        "xs-luque-2.local,,Escuela Luque 2,Central,,,sí,\n"
        "xs luque 3,,Escuela Luque 3,Central,,,sí,\n"
    )
    log_in(page, live_server, "celia")

    page.goto(f"{live_server.url}/schools/")
    page.click("#servers-import-link")
    page.set_input_files(
        "#id_file", files=[{"name": "servidores.csv", "mimeType": "text/csv", "buffer": b"\xff"}]
    )
    page.click("#servers-import-preview")
    # Not UTF-8: said on the form, in Spanish.
    assert "no es texto UTF-8" in page.locator("[data-field=file]").inner_text()

    page.set_input_files(
        "#id_file",
        files=[{"name": "servidores.csv", "mimeType": "text/csv", "buffer": csv.encode()}],
    )
    page.click("#servers-import-preview")
    assert page.locator("h1").inner_text() == "Vista previa de la importación"
    counts = [page.locator(f"#import-{kind}").inner_text() for kind in ("new", "changed", "errors")]
    assert counts == ["1", "1", "1"]
    assert "Todavía no se guardó nada." in page.locator("#import-outcome").inner_text()
    assert "1 línea tiene un error y se omitirá" in page.locator("#import-outcome").inner_text()
    changed = page.locator("tr.import-changed").inner_text()
    assert "“Escuela 1” → “Escuela Uno”" in changed and "sí → no" in changed
    assert "Servidor nuevo" in page.locator("tr.import-new").inner_text()
    bad = page.locator("tr.import-error").inner_text()
    assert bad.startswith("4") and "no es un nombre de host válido" in bad
    assert "letras, dígitos, puntos y guiones" in bad
    # The preview wrote nothing.
    assert SchoolServer.objects.count() == 1
    assert not AuditEvent.objects.exists()

    page.click("#import-confirm-button")
    page.wait_for_url(f"{live_server.url}/schools/")
    said = page.locator(".messages").first.inner_text()
    assert "Servidores agregados: 1; modificados: 1; líneas omitidas: 1." in said
    assert "xs-luque-2.local" in page.locator("table.servers").inner_text()
    caacupe = SchoolServer.objects.get(hostname="xs-caacupe-1.local")
    assert (caacupe.school, caacupe.active) == ("Escuela Uno", False)
    assert set(SchoolServer.objects.values_list("hostname", flat=True)) == {
        "xs-caacupe-1.local",
        "xs-luque-2.local",
    }
    event = AuditEvent.objects.get()
    assert (event.actor, event.code) == (coordinator, "servers_imported")
