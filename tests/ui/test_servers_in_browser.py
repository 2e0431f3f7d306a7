"""A coordinator adds a school server in the console, in Spanish, issues its report token
and sees it once; the audit log names the coordinator."""

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
