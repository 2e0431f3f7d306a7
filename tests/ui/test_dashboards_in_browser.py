"""A coordinator reads the school-server dashboards in a real browser, in Spanish."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from schools.models import SchoolServer, SyncState

from ..factories import make_user
from .test_upload_in_browser import log_in

pytestmark = pytest.mark.browser


def test_a_coordinator_finds_the_silent_servers_and_a_builds_coverage(
    page, live_server, transactional_db, published
):
    build = published("py950-1")
    now = timezone.now()
    fresh = SchoolServer.objects.create(
        hostname="xs-caacupe-1.local",
        name="xs1",
        school="Escuela Caacupé",
        department="Cordillera",
        last_report_at=now - timedelta(hours=2),
        disk_free_bytes=5_000_000_000,
    )
    SchoolServer.objects.create(
        hostname="xs-atyra-1.local",
        name="xs2",
        school="Escuela Atyrá",
        department="Cordillera",
        last_report_at=now - timedelta(hours=40),
    )
    SchoolServer.objects.create(
        hostname="xs-luque-1.local", name="xs3", school="Escuela Luque", department="Central"
    )
    SyncState.objects.create(
        server=fresh, build=build, build_name=build.name, status="verified", held_since=now
    )
    make_user("carla", "coordinators")
    log_in(page, live_server, "carla")

    page.goto(f"{live_server.url}/schools/")
    assert page.locator("h1").inner_text() == "Servidores escolares"
    counts = page.locator("#state-counts")
    assert "1 Silencioso" in " ".join(counts.inner_text().split())
    assert "1 Nunca visto" in " ".join(counts.inner_text().split())

    page.click("a.count[data-state=silent]")
    rows = page.locator("table.servers tbody tr")
    assert rows.count() == 1
    assert "xs-atyra-1.local" in rows.first.inner_text()

    page.goto(f"{live_server.url}/schools/xs-caacupe-1.local/")
    assert "Verificada" in page.locator("table.builds").first.inner_text()
    # Django's filesizeformat: binary units, decimal comma, a no-break space.
    assert re.search(r"4,7\s+GB", page.locator("dl.facts").inner_text())

    page.goto(f"{live_server.url}/schools/builds/{build.name}/")
    assert "33\u00a0%" in page.locator("#coverage").inner_text()
    assert page.locator("svg polyline.chart-line").count() == 1
    assert "xs-luque-1.local" in page.locator("#lagging").inner_text()
