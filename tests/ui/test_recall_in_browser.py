"""A build older checks published and recheck_builds flagged, in a real browser, in Spanish:
the coordinator sees why it would break school servers and what it carries; an approver
recalls it with a reason, and its files leave the puppet content folder."""

import pytest
from django.conf import settings

from releases import recheck
from releases.models import BuildStatus

from ..factories import make_user
from ..releases.test_recheck import hard_link_to_nowhere
from .test_upload_in_browser import log_in

pytestmark = [pytest.mark.browser]


def test_an_approver_recalls_a_build_that_would_break_school_servers(
    page, live_server, published, tmp_path
):
    build = published(uploader=make_user("ana", "uploaders"))
    build.stored_tarball.write_bytes(hard_link_to_nowhere())
    recheck.build_recheck(build=build)
    make_user("aurelio", "approvers")
    log_in(page, live_server, "aurelio")

    page.goto(f"{live_server.url}/builds/")
    assert "rompería los servidores escolares" in page.locator("table.builds").inner_text()
    page.goto(f"{live_server.url}/builds/{build.name}/")
    flag = page.locator("#recheck-flag").inner_text()
    assert "Rompería los servidores escolares" in flag
    # GNU tar's own words, inside the Spanish sentence.
    assert "GNU tar, ejecutado como lo ejecutan los servidores escolares, falla" in flag
    assert "Cannot hard link to 'versions/pristine/21021/bin/bash'" in flag
    assert "Qué contiene la compilación" in page.locator("#archive-notes").inner_text()
    assert page.locator("#promote-link").count() == 0

    page.click("#recheck-flag summary")
    page.fill("#recall-reason", "El enlace duro rompe la actualización de los XS")
    page.screenshot(path=str(tmp_path / "recall.png"), full_page=True)
    page.click("#recall-button")
    page.wait_for_selector(".message")
    assert "retirada" in page.locator(".message").inner_text()

    # The worker's part (queue mothership), as a worker would run it.
    assert recheck.build_remove_files(build_id=build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.RETIRED
    assert not any(settings.PUPPETCONTENT_OS_DIR.iterdir())
    page.reload()
    assert page.locator("#recheck-flag").count() == 0
