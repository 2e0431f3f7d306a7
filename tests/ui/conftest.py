import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser():
    """Debian's chromium driven by Playwright. Skipped where chromium is missing, unless
    PORTAL_REQUIRE_BROWSER is set (CI sets it), where that is a failure."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("PORTAL_REQUIRE_BROWSER"):
            pytest.fail(f"chromium not found at {CHROMIUM}; apt-get install chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls the test makes
    # between browser steps are still synchronous and safe.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield instance
        finally:
            instance.close()
            # The test's own database connection was opened while Playwright's event loop
            # ran in this thread; left open, it keeps PostgreSQL from dropping the test
            # database at the end of the run.
            from django.db import connections

            connections.close_all()
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def csp_violations():
    """What the browser refused under the Content-Security-Policy, as it reported it."""
    return []


@pytest.fixture
def page(browser, csp_violations):
    """A page in Spanish. Any Content-Security-Policy violation reported while the test ran
    fails it: every browser test doubles as a check that the policy breaks nothing."""
    context = browser.new_context(locale="es-PY", viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on(
        "console",
        lambda message: (
            csp_violations.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    yield page
    context.close()
    assert csp_violations == [], "the Content-Security-Policy blocked something"
