"""An approver opens the promotion page of a build, in Spanish, in a real browser: it shows
what the build changes on the laptops above the updates.cfg diff, and a privileged or a
large update is refused until a reason is written."""

import pytest
from django.core.cache import cache
from django.utils import timezone

from releases import offers
from releases.audit import AuditAction
from releases.models import AuditEvent, OfferedEntry
from schools.models import SchoolServer, SyncState

from ..factories import compress, make_user, tree_tar
from .test_upload_in_browser import log_in

pytestmark = pytest.mark.browser

TREE = {
    "etc/issue": b"OLPC OS\n",
    "usr/lib/libsugar.so": b"\x7fELF" + b"s" * 4000,
    "usr/share/doc/README": b"readme\n" * 100,
}
SETUID = {"usr/bin/pkexec": ("file", 0o4755, b"\x7fELF")}
LARGE = {"usr/lib/libsugar.so": b"\x7fELF" + b"t" * 4000}


def held_by_every_school_server(build):
    """So that only the impact gate may ask for a reason."""
    xs = SchoolServer.objects.get_or_create(
        hostname="xs.local", defaults={"name": "xs", "school": "Escuela"}
    )[0]
    SchoolServer.objects.filter(pk=xs.pk).update(last_report_at=timezone.now())
    SyncState.objects.create(server=xs, build=build, build_name=build.name, status="verified")


@pytest.mark.parametrize(
    ("changes", "shown", "refusal"),
    [
        (SETUID, "#impact-privileged", "cambios privilegiados"),
        (LARGE, "#impact-large", "actualización grande"),
    ],
    ids=["privileged", "large"],
)
def test_the_promotion_page_shows_the_impact_and_refuses_without_a_reason(
    page, live_server, published, tmp_path, changes, shown, refusal
):
    cache.clear()
    ana, carla = make_user("ana", "uploaders"), make_user("carla", "approvers")
    first = published("py801-1", uploader=ana, tarball=compress(tree_tar(TREE), "bz2"))
    offers.build_promote(build=first, acting_user=carla, reason="la primera")
    tarball = compress(tree_tar({**TREE, **changes}), "bz2")
    build = published("py801-2", uploader=ana, tarball=tarball)
    held_by_every_school_server(build)
    log_in(page, live_server, "carla")

    page.goto(f"{live_server.url}/builds/{build.name}/promote/")
    impact = page.locator("#impact")
    assert "Impacto de la actualización" in impact.inner_text()
    assert "en comparación con py801-1" in impact.inner_text()
    assert page.locator(shown).is_visible()
    assert "Costo en cada laptop" in page.locator("#impact-summary").inner_text()
    # Above the updates.cfg diff.
    impact_box = impact.bounding_box()
    assert impact_box["y"] < page.locator("#promote-diff").bounding_box()["y"]

    page.screenshot(path=str(tmp_path / "promote.png"), full_page=True)
    page.click("#confirm-promotion")
    error = page.locator("form.promote p.error").first.inner_text()
    assert refusal in error and "escriba por qué" in error
    assert not OfferedEntry.objects.filter(build=build).exists()

    page.fill("#id_reason", "Probada en dos escuelas")
    page.click("#confirm-promotion")
    page.wait_for_url(f"{live_server.url}/deployments/*/")
    assert OfferedEntry.objects.filter(build=build, active=True).exists()
    event = AuditEvent.objects.get(build=build, action=AuditAction.IMPACT_OVERRIDE)
    assert event.params["reason"] == "Probada en dos escuelas"

    # The build page shows the same summary, with a selector for another build.
    page.goto(f"{live_server.url}/builds/{build.name}/")
    assert page.locator(shown).is_visible()
    page.select_option("#impact-against", "py801-1")
    page.click("form.impact-against button")
    page.wait_for_url("**/?against=py801-1")
    assert "en comparación con py801-1" in page.locator("#impact").inner_text()
    page.screenshot(path=str(tmp_path / "build.png"), full_page=True)
