"""An approver follows a build from its page to the rollout funnel, in a real browser, in
Spanish: the laptops running it, per department and per school server, the days to 50 % and
90 %, the chart and its numbers; then the overview's laptops column and a server's laptops."""

from datetime import datetime, time, timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from releases import offers
from releases.models import Build
from schools.models import LaptopDay

from ..factories import make_user
from ..schools.test_funnel_pages import NEW, OLD, STRAY, make_laptops, make_server
from .test_upload_in_browser import log_in

pytestmark = pytest.mark.browser


def test_an_approver_follows_a_build_to_the_laptops_running_it(
    page, live_server, transactional_db, cast, published
):
    build = published("py980-2", contents_hash=NEW)
    offers.build_promote(build=build, acting_user=cast.carol, reason="piloto")
    today = timezone.localdate()
    offered = timezone.make_aware(datetime.combine(today - timedelta(days=4), time(8)))
    build.events.filter(to_status="offered").update(at=offered)
    Build.objects.filter(pk=build.pk).update(published_at=offered - timedelta(days=1))
    for days_ago, running in ((4, 1), (3, 3), (2, 6), (1, 7), (0, 8)):
        day = today - timedelta(days=days_ago)
        LaptopDay.objects.create(day=day, vhash=NEW, laptops=running)
        LaptopDay.objects.create(day=day, vhash=OLD, server_key=1, laptops=10 - running)
    caacupe = make_server("xs-caacupe-1.local")
    luque = make_server("xs-luque-1.local", "Central")
    make_laptops(caacupe, NEW, 6)
    make_laptops(caacupe, STRAY, 2)
    make_laptops(luque, OLD, 2)
    make_user("aprobadora", "approvers")
    log_in(page, live_server, "aprobadora")

    page.goto(f"{live_server.url}/builds/{build.name}/")
    page.click("#coverage-link")
    expect(page.locator("#funnel-steps")).to_contain_text("Ofrecida en updates.cfg desde")
    expect(page.locator("#funnel-steps")).to_contain_text("Laptops activas que la usan: 60\u00a0%")
    expect(page.locator("#laptop-share")).to_contain_text(
        "6 de 10 laptops vistas en los últimos 30 días la usan"
    )
    expect(page.locator("#days-to-50")).to_have_text("2 días")
    expect(page.locator("#days-to-90")).to_have_text("todavía no")
    expect(page.locator("#laptops-short")).to_contain_text("se desconoce")
    expect(page.locator("#laptop-chart svg polyline.chart-line")).to_have_count(1)
    expect(page.locator("#laptop-chart .chart-mark-label")).to_have_text("Ofrecida")

    departments = page.locator("#laptops-by-department tbody tr")
    expect(departments).to_have_count(2)
    expect(departments.first).to_contain_text("Central")
    expect(departments.first).to_contain_text("0\u00a0%")
    # The laggard school first; its link leads to its page and its laptops' versions.
    servers = page.locator("#laptops-by-server tbody tr")
    expect(servers.first).to_contain_text("xs-luque-1.local")
    page.locator("#laptop-chart summary").click()
    expect(page.locator("#laptop-numbers tbody tr")).to_have_count(5)
    expect(page.locator("#laptop-numbers tbody tr").last).to_contain_text("80\u00a0%")

    page.locator("#laptops-by-server a", has_text="xs-caacupe-1.local").click()
    versions = page.locator("#laptop-versions tbody tr")
    expect(versions.first).to_contain_text(build.name)
    expect(versions.nth(1)).to_contain_text("versión desconocida")

    page.goto(f"{live_server.url}/schools/")
    row = page.locator("table.servers tbody tr", has_text="xs-caacupe-1.local")
    expect(row.locator("td.laptops")).to_have_text("6 / 8")
