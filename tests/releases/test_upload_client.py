"""releases/client/xo-upload, the build machine's resumable upload, run as a program against
a live portal: it sends a build, goes on from what the portal holds after an interrupted
run, and says why the portal refused one."""

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from django.test import Client

from portal.services import api_token_create
from releases.models import Build, ResumableUpload

from ..factories import write_build

SCRIPT = Path(__file__).resolve().parents[2] / "releases" / "client" / "xo-upload"


def run(live_server, key, *files, **env):
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--portal", live_server.url, *map(str, files)],
        env={"PATH": os.environ["PATH"], "XO_PORTAL_TOKEN": key, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_sends_a_build_and_goes_on_from_what_the_portal_holds(
    live_server, transactional_db, cast, tmp_path, settings
):
    settings.UPLOAD_CHUNK_BYTES = 64 * 1024
    _token, key = api_token_create(user=cast.alice, name="builder")
    data = os.urandom(5 * 64 * 1024 + 99)
    files = write_build(tmp_path / "in", "py920-1", tarball=data)
    # An earlier run that stopped after two chunks.
    api = Client(HTTP_AUTHORIZATION=f"Token {key}")
    body = {
        "filename": files[0].name,
        "size": len(data),
        "first_chunk_sha256": hashlib.sha256(data[: 8 * 1024 * 1024]).hexdigest(),
    }
    url = api.post("/api/uploads/", json.dumps(body), content_type="application/json").json()["url"]
    piece = data[: 2 * 64 * 1024]
    api.put(
        url,
        piece,
        content_type="application/octet-stream",
        HTTP_CONTENT_RANGE=f"bytes 0-{len(piece) - 1}/{len(data)}",
        HTTP_CONTENT_DIGEST="sha-256=:"
        + base64.b64encode(hashlib.sha256(piece).digest()).decode()
        + ":",
    )

    done = run(live_server, key, *files)

    assert done.returncode == 0, done.stderr
    assert f"resuming from byte {len(piece)} of {len(data)}" in done.stderr
    assert done.stdout.splitlines() == ["py920-1: Subida", f"{live_server.url}/builds/py920-1/"]
    build = Build.objects.get(name="py920-1")
    assert build.md5 == hashlib.md5(data).hexdigest()
    assert build.stored_tarball.read_bytes() == data
    assert not ResumableUpload.objects.exists()


def test_it_says_why_the_portal_refused_the_build(live_server, transactional_db, cast, tmp_path):
    _token, key = api_token_create(user=cast.alice, name="builder")
    files = write_build(tmp_path / "in", "py921-1", md5_text=f"{'0' * 32}  py921-1-tree.tar.bz2\n")

    refused = run(live_server, key, *files)

    assert refused.returncode == 1
    assert "md5: La suma de verificación no coincide" in refused.stderr  # the portal speaks Spanish
    assert not Build.objects.exists()


def test_it_refuses_to_run_without_a_token(live_server, transactional_db, tmp_path):
    files = write_build(tmp_path / "in", "py922-1")
    missing = run(live_server, "", *files)
    assert missing.returncode == 2
    assert "XO_PORTAL_TOKEN" in missing.stderr
