"""The pages work under the Content-Security-Policy: htmx loads and swaps without injecting
a <style>, and the browser reports no violation (the `page` fixture fails on any)."""

import time

import pytest

from schools.models import SchoolServer

from .test_upload_in_browser import log_in

pytestmark = pytest.mark.browser


def test_the_main_pages_run_under_the_policy_without_a_violation(
    page, live_server, transactional_db, published, cast
):
    build = published("py960-1")
    SchoolServer.objects.create(
        hostname="xs-pirayu-1.local", name="xs", school="Escuela Pirayú", department="Paraguarí"
    )
    log_in(page, live_server, "root")
    paths = [
        "/builds/",
        f"/builds/{build.name}/",
        f"/builds/{build.name}/promote/",
        "/upload/",
        "/deployments/",
        "/schools/",
        "/schools/client/",
        f"/schools/builds/{build.name}/",
        "/schools/xs-pirayu-1.local/",
        "/admin/",
        "/admin/schools/schoolserver/",
    ]
    for path in paths:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        if not path.startswith("/admin/"):
            page.wait_for_function("window.htmx && htmx.config.includeIndicatorStyles === false")
            assert page.evaluate("document.querySelectorAll('style').length") == 0, path


def test_the_browser_does_report_a_violation(
    page, live_server, transactional_db, cast, csp_violations
):
    """The check above can fail: markup with an inline style is refused and reported."""
    log_in(page, live_server, "dave")
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color: red\">x</p>')")
    deadline = time.monotonic() + 10
    while not csp_violations and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert any("style-src" in text for text in csp_violations), csp_violations
    csp_violations.clear()
