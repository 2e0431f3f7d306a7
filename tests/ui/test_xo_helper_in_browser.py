"""The contents hash as a guided step, in a real browser, in Spanish: the uploader reads the
XO procedure on the build page, makes an XO helper link, and the command the page shows,
typed on an "XO" (curl, python and the stand-in bitfrost), fills the hash in."""

import re
import subprocess
import sys

import pytest

from ..factories import make_user
from ..releases.test_xo_helper import STUB, sha256_of
from .test_upload_in_browser import log_in

pytestmark = pytest.mark.browser


def test_an_uploader_gets_the_hash_from_an_xo_with_the_helper(
    page, live_server, unhashed, tmp_path
):
    build = unhashed(uploader=make_user("ana", "uploaders"))
    log_in(page, live_server, "ana")

    page.goto(f"{live_server.url}/builds/{build.name}/")
    procedure = page.locator("#xo-procedure").inner_text()
    assert "bitfrost" in procedure and "A mano" in procedure
    assert page.locator("#contents-download").inner_text() == f"{build.name}.contents"
    page.click("#xo-helper-button")
    command = page.locator("#xo-helper-command").inner_text()
    assert "funciona una vez" in page.locator("#xo-helper-expiry").inner_text()
    link = rf"{re.escape(live_server.url)}/xo/\S+"
    assert re.fullmatch(rf"curl -so xo-hash\.py {link} && python xo-hash\.py", command)

    # On the XO: the command exactly as shown, its python standing in for the XO's.
    xo = tmp_path / "xo"
    xo.mkdir()
    typed = command.replace("python xo-hash.py", f"{sys.executable} xo-hash.py")
    result = subprocess.run(
        ["/bin/sh", "-c", typed],
        cwd=xo,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(STUB), "HOME": str(xo)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Guardado" in result.stdout

    page.goto(f"{live_server.url}/builds/{build.name}/")
    assert page.locator("#xo-procedure").count() == 0
    assert sha256_of(build.stored_contents) in page.content()
    assert "calculado en una XO por el asistente XO" in page.locator("body").inner_text()
