"""The XO helper: a one-time link an XO fetches with curl and runs with its own python. The
served script is run for real (with every Python this machine has, 2.7 included when there
is one) against the live portal, with a stand-in `bitfrost` package on its path
(tests/xo_stub)."""

import glob
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation

from releases import services, xohelper
from releases.models import AuditEvent, Build, BuildStatus, HashSource, XoHelper
from releases.reasons import Refused, render

from ..factories import english_client

STUB = Path(__file__).resolve().parents[1] / "xo_stub"


def _pythons() -> list:
    """This interpreter, and the XO's older ones where this machine has them (pyenv's)."""
    found = {"current": sys.executable}
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for name, pattern in (("2.7", "2.7*/bin/python2.7"), ("3.6", "3.6*/bin/python3.6")):
        candidates = sorted(glob.glob(os.path.join(root, "versions", pattern)))
        candidates += [path for path in [shutil.which(f"python{name}")] if path]
        for path in candidates:
            if subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0:
                found[name] = path
                break
    return [
        pytest.param(found.get(name), id=name)
        if name in found
        else pytest.param(
            None, id=name, marks=pytest.mark.skip(reason=f"no python{name} on this machine")
        )
        for name in ("current", "2.7", "3.6")
    ]


def make_link(client, build) -> str:
    """The token of a new link, made on the build page by `client`'s user."""
    response = client.post(reverse("releases:build_xo_helper", args=[build.name]))
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    command = response.context["command"]
    match = re.fullmatch(r"curl -so (\S+) (\S+) && python \1", command)
    assert match, command
    return urlsplit(match.group(2)).path.rsplit("/", 1)[1]


def logged_in(user) -> Client:
    client = english_client()
    client.force_login(user)
    return client


def fetch_script(live_server, token, folder: Path):
    """What the XO does first: curl -so xo-hash.py LINK. Returns curl's result and the file."""
    target = folder / "xo-hash.py"
    result = subprocess.run(
        ["curl", "-so", str(target), "-w", "%{http_code}", f"{live_server.url}/xo/{token}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, target


def run_on_xo(python, script: Path, *, bitfrost=True, env=None):
    """`python xo-hash.py` on an XO: its own python, its own bitfrost."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(script.parent)}
    if bitfrost:
        base["PYTHONPATH"] = str(STUB)
    return subprocess.run(
        [python, str(script)],
        cwd=script.parent,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def said(code, **params) -> str:
    """A refusal as the XO reads it: in the deployment's language (it has no session)."""
    with translation.override(settings.LANGUAGE_CODE):
        return render(code, params)


def xo_said(key, **params) -> str:
    """What the script says, in the deployment's language."""
    with translation.override(settings.LANGUAGE_CODE):
        return xohelper.script_messages()[key] % params


def said_saved(name, value) -> str:
    with translation.override(settings.LANGUAGE_CODE):
        return translation.gettext(
            "Saved: the contents hash of %(name)s is %(value)s. You can close this terminal."
        ) % {"name": name, "value": value}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- The script on an XO, against the live portal --------------------------------------------


@pytest.mark.parametrize("python", _pythons())
def test_an_xo_computes_the_hash_with_its_bitfrost_and_sends_it_back(
    python, live_server, unhashed, cast, tmp_path
):
    build = unhashed()
    token = make_link(logged_in(cast.alice), build)

    status, script = fetch_script(live_server, token, tmp_path)
    assert status == "200"
    result = run_on_xo(python, script)

    expected = sha256_of(build.stored_contents)
    assert result.returncode == 0, result.stderr
    assert xo_said("computed", build=build.name, value=expected) in result.stdout
    assert said_saved(build.name, expected) in result.stdout
    build.refresh_from_db()
    assert build.contents_hash == expected
    assert build.contents_hash_source == HashSource.ENTERED
    event = build.events.get(code="hash_set_xo_helper")
    assert event.actor == cast.alice  # entered by whoever made the link, not "the XO"
    assert event.params == {"value": expected}
    assert XoHelper.objects.get(build=build).used_at is not None
    # Nothing left behind in the XO's temporary folder.
    assert not list(Path(tmp_path).glob("xo-contents-hash-*"))


@pytest.mark.parametrize("python", _pythons())
def test_a_used_link_serves_a_script_that_says_so(python, live_server, unhashed, cast, tmp_path):
    build = unhashed()
    token = make_link(logged_in(cast.alice), build)
    status, script = fetch_script(live_server, token, tmp_path)
    assert run_on_xo(python, script).returncode == 0

    status, again = fetch_script(live_server, token, tmp_path)
    result = run_on_xo(python, again)

    assert status == "410"
    assert result.returncode == 2
    assert said("xo_helper_gone") in result.stderr
    assert build.events.filter(code="hash_set_xo_helper").count() == 1


def test_a_hash_the_portal_refuses_is_printed_to_paste_and_the_link_stays_usable(
    live_server, unhashed, cast, tmp_path
):
    build = unhashed()
    token = make_link(logged_in(cast.alice), build)
    _, script = fetch_script(live_server, token, tmp_path)
    # A damaged XO image: its bitfrost prints something that is not a hash.
    stub = tmp_path / "odd"
    shutil.copytree(STUB, stub)
    utils = stub / "bitfrost" / "contents" / "utils.py"
    utils.write_text(utils.read_text().replace("hexdigest()", 'hexdigest() + " and more"'))

    result = run_on_xo(sys.executable, script, bitfrost=False, env={"PYTHONPATH": str(stub)})

    assert result.returncode == 1
    assert "HTTP 400" in result.stderr
    assert said("hash_invalid", value=f"{sha256_of(build.stored_contents)} and more") in (
        result.stderr
    )
    assert f"/builds/{build.name}/" in result.stderr  # where to paste it
    build.refresh_from_db()
    assert build.contents_hash == ""
    assert XoHelper.objects.get(build=build).used_at is None
    # The same link still works with a sound bitfrost.
    assert run_on_xo(sys.executable, script).returncode == 0
    build.refresh_from_db()
    assert build.contents_hash == sha256_of(build.stored_contents)


def test_when_the_portal_cannot_be_reached_the_hash_is_printed_to_paste(
    live_server, unhashed, cast, tmp_path
):
    build = unhashed()
    token = make_link(logged_in(cast.alice), build)
    _, script = fetch_script(live_server, token, tmp_path)
    # The XO loses the network after the download: the post goes nowhere.
    text = script.read_text()
    hash_line = re.search(r'^HASH_URL = "(.*)"$', text, re.M)
    script.write_text(
        text.replace(hash_line.group(1), f"http://127.0.0.1:{closed_port()}/xo/{token}/hash")
    )

    result = run_on_xo(sys.executable, script)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == sha256_of(build.stored_contents)
    assert xo_said("not_sent", error="ERROR", page="PAGE").split("(ERROR)")[0] in result.stderr
    build.refresh_from_db()
    assert build.contents_hash == ""


def test_a_contents_file_damaged_on_the_way_is_not_hashed(live_server, unhashed, cast, tmp_path):
    build = unhashed()
    token = make_link(logged_in(cast.alice), build)
    _, script = fetch_script(live_server, token, tmp_path)
    stored = Path(build.stored_contents)
    stored.write_bytes(stored.read_bytes() + b" ")  # what the XO receives is not what we hold

    result = run_on_xo(sys.executable, script)

    assert result.returncode == 2
    damaged = xo_said(
        "damaged",
        file=f"{build.name}.contents",
        got=sha256_of(stored),
        expected=build.contents_sha256,
    )
    assert damaged in result.stderr
    build.refresh_from_db()
    assert build.contents_hash == ""


@pytest.mark.parametrize(
    ("bitfrost", "env", "key", "params"),
    [
        (False, {}, "no_bitfrost", {}),
        (
            True,
            {"XO_STUB_FAIL": "1"},
            "hash_failed",
            {"error": "ValueError: stand-in bitfrost told to fail"},
        ),
    ],
    ids=["no-bitfrost", "bitfrost-fails"],
)
def test_without_a_working_bitfrost_nothing_is_sent(
    bitfrost, env, key, params, live_server, unhashed, cast, tmp_path
):
    build = unhashed()
    token = make_link(logged_in(cast.alice), build)
    _, script = fetch_script(live_server, token, tmp_path)

    result = run_on_xo(sys.executable, script, bitfrost=bitfrost, env=env)

    assert result.returncode == 2
    assert xo_said(key, **params) in result.stderr
    assert XoHelper.objects.get(build=build).used_at is None


# --- The link ---------------------------------------------------------------------------------


def test_the_link_is_audited_and_only_its_digest_is_kept(unhashed, cast):
    build = unhashed()
    token = make_link(logged_in(cast.carol), build)

    helper = XoHelper.objects.get(build=build)
    assert helper.created_by == cast.carol
    assert token not in helper.token_hash
    assert helper.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert helper.expires_at - helper.created_at == timedelta(seconds=settings.XO_HELPER_TTL)
    event = build.events.get(code="xo_helper_created")
    assert event.actor == cast.carol
    assert "it works once, until" in event.message


def test_an_expired_link_takes_nothing(unhashed, cast, client):
    build = unhashed()
    past = timezone.now() - timedelta(seconds=settings.XO_HELPER_TTL + 1)
    _, token = xohelper.helper_create(build=build, acting_user=cast.alice, now=past)

    script = client.get(reverse("releases:xo_helper_script", args=[token]))
    contents = client.get(reverse("releases:xo_helper_contents", args=[token]))
    posted = client.post(
        reverse("releases:xo_helper_hash", args=[token]), {"contents_hash": "a" * 64}
    )

    assert script.status_code == contents.status_code == posted.status_code == 410
    build.refresh_from_db()
    assert build.contents_hash == ""


def test_an_unknown_token_is_gone_not_an_error(client, db):
    url = reverse("releases:xo_helper_hash", args=["nope"])
    response = client.post(url, {"contents_hash": "x"})
    assert response.status_code == 410
    assert response["Content-Type"].startswith("text/plain")


def test_the_xo_needs_no_session_but_the_link_needs_an_editor(unhashed, cast, client):
    build = unhashed()
    url = reverse("releases:build_xo_helper", args=[build.name])

    assert client.post(url).status_code == 302  # anonymous: to the login page
    for who in (cast.dave, cast.eve):
        assert logged_in(who).post(url).status_code == 403
    assert not XoHelper.objects.exists()
    assert logged_in(cast.alice).get(url).status_code == 405

    token = make_link(logged_in(cast.alice), build)
    response = client.get(reverse("releases:xo_helper_contents", args=[token]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == Path(build.stored_contents).read_bytes()


def test_a_link_is_refused_for_a_build_whose_hash_can_no_longer_change(unhashed, cast):
    build = unhashed()
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.INVALID)
    build.refresh_from_db()
    with pytest.raises(Refused) as refused:
        xohelper.helper_create(build=build, acting_user=cast.alice)
    assert refused.value.code == "xo_helper_invalid_build"

    Build.objects.filter(pk=build.pk).update(status=BuildStatus.OFFERED)
    response = logged_in(cast.alice).post(
        reverse("releases:build_xo_helper", args=[build.name]), follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("releases:build_detail", args=[build.name])
    assert "The hash of an offered or retired build cannot change." in response.content.decode()
    assert not XoHelper.objects.exists()


def test_a_hash_posted_after_the_build_was_offered_is_refused(unhashed, cast, client):
    build = unhashed()
    helper, token = xohelper.helper_create(build=build, acting_user=cast.alice)
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.OFFERED)

    response = client.post(
        reverse("releases:xo_helper_hash", args=[token]), {"contents_hash": "b" * 64}
    )

    assert response.status_code == 400
    helper.refresh_from_db()
    assert helper.used_at is None
    assert not AuditEvent.objects.filter(code="hash_set_xo_helper").exists()


# --- The build page ----------------------------------------------------------------------------


def test_the_build_page_explains_the_procedure_until_the_hash_is_known(unhashed, cast):
    build = unhashed()
    client = logged_in(cast.alice)
    page = client.get(reverse("releases:build_detail", args=[build.name])).content.decode()

    assert 'id="xo-procedure"' in page
    assert 'id="xo-helper-button"' in page
    assert reverse("releases:build_contents_file", args=[build.name]) in page
    assert f"{build.name}.contents" in page
    download = client.get(reverse("releases:build_contents_file", args=[build.name]))
    assert b"".join(download.streaming_content) == Path(build.stored_contents).read_bytes()

    services.build_set_contents_hash(build=build, acting_user=cast.alice, value="c" * 64)
    page = client.get(reverse("releases:build_detail", args=[build.name])).content.decode()
    assert 'id="xo-procedure"' not in page


def test_people_who_may_not_edit_see_no_helper_button(unhashed, cast):
    build = unhashed()
    page = logged_in(cast.dave).get(reverse("releases:build_detail", args=[build.name]))
    assert 'id="xo-helper-button"' not in page.content.decode()
