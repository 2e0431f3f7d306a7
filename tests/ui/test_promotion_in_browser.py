"""An approver promotes a published build in a real browser, in Spanish: sees the exact
diff of updates.cfg, gives the reason the coverage gate asks for, confirms, and watches the
deployment finish; a real worker writes the file."""

import pytest

from releases.models import BuildStatus, OfferedEntry

from ..factories import make_user
from .test_upload_in_browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def test_an_approver_promotes_a_build_and_updates_cfg_is_deployed(
    page, live_server, start_worker, published, settings, tmp_path
):
    cfg = tmp_path / "oatslite" / "updates.cfg"
    settings.OATSLITE_UPDATES_CFG = cfg
    build = published(uploader=make_user("ana", "uploaders"))
    make_user("aurelio", "approvers")
    log_in(page, live_server, "aurelio")

    page.goto(f"{live_server.url}/builds/{build.name}/")
    page.click("#promote-link")
    diff = page.locator("#promote-diff").inner_text()
    assert f"+[{build.contents_hash}]" in diff
    assert f"+update_path = rsync://schoolserver/build-{build.name}" in diff
    assert "Cobertura desconocida" in page.locator("#coverage-unknown").inner_text()

    # Without a reason the gate refuses, in Spanish, and nothing changes.
    page.click("#confirm-promotion")
    assert "escriba por qué" in page.locator("p.error").first.inner_text().lower()
    assert not OfferedEntry.objects.exists()

    page.fill("#id_reason", "Prueba piloto en dos escuelas")
    page.click("#confirm-promotion")
    page.wait_for_url(f"{live_server.url}/deployments/*/")
    assert page.locator("#deployment-state").inner_text() == "En espera"

    start_worker(OATSLITE_UPDATES_CFG=str(cfg))
    page.wait_for_selector("#deployment-state:has-text('Desplegado')", timeout=60_000)
    # The page shows exactly what was written.
    shown = page.locator("#deployment-content").inner_text()
    assert shown.rstrip("\n") == cfg.read_text().rstrip("\n")
    assert build.name in cfg.read_text()
    build.refresh_from_db()
    assert build.status == BuildStatus.OFFERED
    page.screenshot(path=str(tmp_path / "deployment.png"), full_page=True)
