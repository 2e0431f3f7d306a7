"""Every page a coordinator or an approver opens on a phone, at 375 px in a real browser: no
page scrolls sideways, long names and hashes wrap, tables become stacked rows that name
their columns."""

from datetime import timedelta

import pytest
from django.utils import timezone

from releases import offers
from releases.models import Build, Deployment
from schools.models import LaptopDay, SchoolServer, SyncState

from ..schools.test_funnel_pages import make_laptops
from .test_upload_in_browser import log_in

pytestmark = pytest.mark.browser

PHONE = {"width": 375, "height": 800}

# The page's width beyond the viewport, and the elements sticking out of it (for the message).
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll("body *")]
    .filter((e) => e.getBoundingClientRect().right > width + 1 && !e.closest("pre, svg"))
    .slice(0, 5)
    .map((e) => e.tagName + (e.id ? "#" + e.id : "") + "." + e.className);
  return {scroll: document.documentElement.scrollWidth, width, wide};
}"""


@pytest.fixture
def world(transactional_db, cast, published):
    long_name = "py2026-caacupe-cordillera-pilot-" + "x" * 30
    build = published(long_name)
    now = timezone.now()
    Build.objects.filter(pk=build.pk).update(published_at=now - timedelta(days=3))
    server = SchoolServer.objects.create(
        hostname="xs-escuela-basica-numero-1234-san-bernardino-cordillera.local",
        name="xs1",
        school="Escuela Básica N.º 1234 Doctor José Gaspar Rodríguez de Francia",
        department="Cordillera",
        last_report_at=now - timedelta(hours=30),
        last_error="last refresh exited with status 23 " + "rsync: failed " * 10,
        problems=[
            ["refresh_failed", {"status": 1}],
            ["refresh_killed", {"status": 137, "signal": 9}],
        ],
    )
    SyncState.objects.create(
        server=server,
        build=build,
        build_name=build.name,
        status="present",
        held_since=now - timedelta(days=1),
    )
    offers.build_promote(build=build, acting_user=cast.carol, reason="piloto")
    # Laptops, so the funnel, the overview's laptops column and the server's laptop
    # versions have rows (a long school name, an unknown version's hash).
    make_laptops(server, build.contents_hash.lower(), 3)
    make_laptops(server, "e" * 64, 2)
    for days_ago in range(3):
        day = timezone.localdate() - timedelta(days=days_ago)
        LaptopDay.objects.create(day=day, vhash=build.contents_hash.lower(), laptops=3)
        LaptopDay.objects.create(day=day, vhash="e" * 64, server_key=server.pk, laptops=2)
    return build, server


def test_every_page_fits_a_phone_and_tables_stack(page, live_server, world):
    build, server = world
    log_in(page, live_server, "root")
    page.set_viewport_size(PHONE)
    deployment = Deployment.objects.get()
    pages = [
        "/",
        "/builds/",
        f"/builds/{build.name}/",
        f"/builds/{build.name}/promote/",
        "/upload/",
        "/deployments/",
        f"/deployments/{deployment.pk}/",
        "/schools/",
        f"/schools/{server.hostname}/",
        f"/schools/builds/{build.name}/",
        "/schools/client/",
        "/schools/servers/add/",
        f"/schools/{server.hostname}/edit/",
        "/schools/servers/import/",
        "/profile/",
    ]
    for path in pages:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        measured = page.evaluate(OVERFLOW)
        assert measured["scroll"] <= PHONE["width"], (path, measured)

    # The funnel's tables stack too, and its chart shrinks to the phone.
    page.goto(f"{live_server.url}/schools/builds/{build.name}/")
    assert page.locator("#laptops-by-server tbody tr").count() == 1
    chart = page.locator("#laptop-chart svg").bounding_box()
    assert chart["width"] <= PHONE["width"]

    # The overview's rows are stacked, each cell with its column's name beside the value.
    page.goto(f"{live_server.url}/schools/")
    cell = page.locator("table.servers tbody td[data-label]").first
    assert cell.evaluate("e => getComputedStyle(e).display") == "grid"
    row = page.locator("table.servers tbody tr").first
    assert row.evaluate("e => getComputedStyle(e).display") == "block"
    assert cell.evaluate("e => getComputedStyle(e, '::before').content") == '"Servidor"'
    assert not page.locator("table.servers thead").is_visible()

    # The same page on a desktop keeps its table.
    page.set_viewport_size({"width": 1200, "height": 900})
    assert cell.evaluate("e => getComputedStyle(e).display") == "table-cell"
