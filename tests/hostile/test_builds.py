"""Hostile and broken builds through every door: the upload form, the API and the CLI.

Each row of FILE_CASES is one bad input, sent through all three entry points; the smaller
tables hold what only one door can get wrong (tokens, content types, paths on disk). Every
row asserts a 4xx (or a failing command), the specific message, and that nothing else
changed: no row, no file under PORTAL_DATA_DIR, no updates.cfg write (see snapshot.py).
"""

import html
import io
import random
import re
from dataclasses import dataclass, field

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import translation

from portal.services import api_token_create
from releases import services

from ..factories import PASSWORD, english_client, make_user, stage, write_build
from . import snapshot

UPLOAD_URL = "/upload/"
API_URL = "/api/builds/"
CHANNELS = ["form", "api", "cli"]
TARBALL = "py801-2-tree.tar.bz2"
GOOD_HASH = "a" * 32


@dataclass(frozen=True)
class Bad:
    """One bad build. Files are the good py801-2 build except what the row replaces."""

    id: str
    expect: tuple[str, ...]  # fragments of the English message, every channel
    where: str = "__all__"  # where the form and the API put the message
    tarball: bytes | None = None
    tarball_file: str = ""  # the archive's file name, when not <prefix>-tree.tar.bz2
    md5: str | bytes | None = None  # str: formatted with {md5} and {file}
    contents: bytes | None = None
    name: str = ""  # the name field / --name
    contents_hash: str = ""
    limits: dict = field(default_factory=dict)  # settings for this row
    taken: str = ""  # a name an earlier build already holds
    channel_expect: dict = field(default_factory=dict)  # channel -> fragments instead
    api_status: int = 400


EMPTY_FILE = ("The submitted file is empty.",)
NAME_RULE = ("1 to 64 letters, digits, dots, dashes or underscores",)

FILE_CASES = [
    # --- the .md5 file ---
    Bad(
        "md5-not-hex",
        ("does not start with a 32-digit hexadecimal checksum",),
        "md5",
        md5="not-a-checksum  {file}\n",
    ),
    Bad(
        "md5-is-sha256",
        ("64 hexadecimal digits instead of 32 (a SHA-256 checksum?)",),
        "md5",
        md5="{md5}{md5}  {file}\n",
    ),
    Bad(
        "md5-hash-glued-to-name",
        ("must be followed by two spaces and the file name",),
        "md5",
        md5="{md5}\t{file}\n",
    ),
    Bad(
        "md5-for-another-file",
        ("is for “py801-1-tree.tar.bz2”, not for the archive “py801-2-tree.tar.bz2”",),
        "md5",
        md5="{md5}  py801-1-tree.tar.bz2\n",
    ),
    Bad(
        "md5-names-a-path-outside",
        ("is for “../../etc/passwd”",),
        "md5",
        md5="{md5}  ../../etc/passwd\n",
    ),
    Bad("md5-two-lines", ("lists 2 files",), "md5", md5="{md5}  {file}\n{md5}  other\n"),
    Bad("md5-binary", ("The .md5 file is not text.",), "md5", md5=b"\x89PNG\r\n\x1a\n\xff\xfe"),
    Bad("md5-nul-byte", ("The .md5 file is not text.",), "md5", md5="{md5}  {file}\x00\n"),
    Bad("md5-only-blank-lines", ("md5sum format", "the file is empty"), "md5", md5="\r\n \n\t\n"),
    Bad(
        "md5-mismatch",
        ("Checksum mismatch: the .md5 file says " + "0" * 32,),
        "md5",
        md5="0" * 32 + "  {file}\n",
    ),
    Bad(
        "md5-empty",
        ("The md5 file “py801-2-tree.tar.bz2.md5” is empty.",),
        "md5",
        md5="",
        channel_expect={"form": EMPTY_FILE, "api": EMPTY_FILE},
    ),
    Bad(
        "md5-oversized",
        ("larger than", "65536 bytes"),
        "md5",
        md5="{md5}  {file}\n" + "#" * 70_000,
        api_status=413,
    ),
    # --- the archive, before reading it ---
    Bad(
        "tarball-empty",
        ("The tarball file “py801-2-tree.tar.bz2” is empty.",),
        "tarball",
        tarball=b"",
        channel_expect={"form": EMPTY_FILE, "api": EMPTY_FILE},
    ),
    Bad(
        "tarball-oversized",
        ("larger than the limit of 1024 bytes",),
        "tarball",
        tarball=random.Random(5).randbytes(4096),
        limits={"MAX_BUILD_BYTES": 1024},
        api_status=413,
    ),
    Bad(
        "tarball-gzip-extension",
        ("“py801-2-tree.tar.gz” is not a build archive",),
        "tarball",
        tarball_file="py801-2-tree.tar.gz",
    ),
    Bad(
        "tarball-without-tree",
        ("“py801-2.tar.bz2” is not a build archive",),
        "tarball",
        tarball_file="py801-2.tar.bz2",
    ),
    Bad(
        "tarball-prefix-unicode",
        ("The name “pý801-2” is not allowed",),
        "name",
        tarball_file="pý801-2-tree.tar.bz2",
    ),
    Bad(
        "tarball-prefix-space",
        ("The name “py 801” is not allowed",),
        "name",
        tarball_file="py 801-tree.tar.bz2",
    ),
    Bad(
        "tarball-prefix-leading-dot",
        ("The name “.py801-2” is not allowed",),
        "name",
        tarball_file=".py801-2-tree.tar.bz2",
    ),
    Bad(
        "tarball-prefix-65-chars",
        (f"The name “{'p' * 65}” is not allowed",),
        "name",
        tarball_file="p" * 65 + "-tree.tar.bz2",
    ),
    # --- the name given ---
    Bad("name-with-space", NAME_RULE, "name", name="py801 2"),
    Bad("name-unicode", NAME_RULE, "name", name="py801-ñandutí"),
    Bad("name-climbs-out", NAME_RULE, "name", name="../py801-2"),
    Bad("name-with-slash", NAME_RULE, "name", name="py801/2"),
    Bad("name-leading-dot", NAME_RULE, "name", name=".py801-2"),
    Bad("name-leading-dash", NAME_RULE, "name", name="-py801-2"),
    Bad("name-65-chars", NAME_RULE, "name", name="p" * 65),
    Bad(
        "name-reused",
        ("The name “py801-2” was already used by another build",),
        "name",
        taken="py801-2",
    ),
    Bad(
        "name-reused-other-case",
        ("The name “py801-2” was already used by another build",),
        "name",
        taken="PY801-2",
    ),
    Bad(
        "name-given-reused",
        ("The name “py801-1” was already used by another build",),
        "name",
        name="py801-1",
        taken="py801-1",
    ),
    # --- the contents hash entered ---
    Bad("hash-too-short", ("“abc” is not a contents hash",), "contents_hash", contents_hash="abc"),
    Bad(
        "hash-with-spaces",
        ("“not a hash at all” is not a contents hash",),
        "contents_hash",
        contents_hash="not a hash at all",
    ),
    Bad(
        "hash-unicode",
        ("“abcdéf0123” is not a contents hash",),
        "contents_hash",
        contents_hash="abcdéf0123",
    ),
    # --- the .contents file ---
    Bad(
        "contents-empty",
        ("The .contents file is empty.",),
        "contents",
        contents=b"",
        channel_expect={"form": EMPTY_FILE, "api": EMPTY_FILE},
    ),
    Bad("contents-not-json", ("The .contents file is not JSON",), "contents", contents=b"hello"),
    Bad(
        "contents-truncated-json",
        ("The .contents file is not JSON",),
        "contents",
        contents=b'{"files": ["etc/issue", ',
    ),
    Bad(
        "contents-not-utf8",
        ("The .contents file is not UTF-8 text (byte 12)",),
        "contents",
        contents=b'{"files": ["\xe9tc/issue"]}',
    ),
    Bad(
        "contents-utf16",
        ("The .contents file is not UTF-8 text (byte 0)",),
        "contents",
        contents='{"files": []}'.encode("utf-16"),
    ),
    Bad(
        "contents-nested-too-deep",
        ("The .contents file is not JSON", "nested too deeply"),
        "contents",
        contents=b"[" * 100_000 + b"]" * 100_000,
    ),
    Bad(
        "contents-number-too-long",
        ("The .contents file is not JSON",),
        "contents",
        contents=b'{"size": ' + b"9" * 5000 + b"}",
    ),
    Bad(
        "contents-oversized",
        ("larger than", "64 bytes"),
        "contents",
        contents=b'{"files": "' + b"x" * 100 + b'"}',
        limits={"MAX_CONTENTS_BYTES": 64},
        api_status=413,
    ),
]


def write_files(case: Bad, folder):
    """The three files of `case` on disk, as the image builder would leave them."""
    tarball, md5, contents = write_build(folder, "py801-2", tarball=case.tarball)
    if case.tarball_file:
        tarball = tarball.rename(folder / case.tarball_file)
        md5 = md5.rename(folder / f"{case.tarball_file}.md5")
        md5.write_text(md5.read_text().replace(TARBALL, case.tarball_file))
        prefix = services.TARBALL_RE.match(case.tarball_file)
        if prefix:
            contents = contents.rename(folder / f"{prefix['prefix']}.contents")
    if case.md5 is not None:
        actual = md5.read_text().split()[0]
        data = case.md5
        if isinstance(data, str):
            data = data.format(md5=actual, file=tarball.name).encode()
        md5.write_bytes(data)
    if case.contents is not None:
        contents.write_bytes(case.contents)
    return tarball, md5, contents


def take_name(name, user, tmp_path):
    """An earlier build holding `name` (its own files, through the real service)."""
    paths = write_build(tmp_path / "earlier" / name, name)
    staged = [stage(path, django_settings.UPLOAD_TEMP_DIR) for path in paths]
    services.build_create(
        acting_user=user, tarball=staged[0], md5_file=staged[1], contents=staged[2]
    )


def upload_data(files, case):
    tarball, md5, contents = files
    data = {
        name: SimpleUploadedFile(path.name, path.read_bytes())
        for name, path in (("tarball", tarball), ("md5", md5), ("contents", contents))
    }
    for key in ("name", "contents_hash"):
        if getattr(case, key):
            data[key] = getattr(case, key)
    return data


ERROR_P = re.compile(r'<p class="error" role="alert"(?: data-field="(?P<field>\w+)")?>(.*?)</p>')


def form_errors(response) -> dict[str, list[str]]:
    """The error paragraphs of the upload page, by field, unescaped."""
    found: dict[str, list[str]] = {}
    for match in ERROR_P.finditer(response.content.decode()):
        found.setdefault(match["field"] or "__all__", []).append(html.unescape(match[2]))
    return found


def assert_says(messages, fragments):
    text = " | ".join(messages)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


def send_form(files, case, alice):
    client = english_client()
    assert client.login(username=alice.username, password=PASSWORD)
    before = snapshot.take()
    response = client.post(UPLOAD_URL, upload_data(files, case))
    assert response.status_code == 400, response.status_code
    errors = form_errors(response)
    assert_says(errors.get(case.where, []), case.channel_expect.get("form", case.expect))
    return before


def send_api(files, case, alice):
    _token, key = api_token_create(user=alice)
    client = Client(HTTP_AUTHORIZATION=f"Token {key}", HTTP_ACCEPT_LANGUAGE="en")
    before = snapshot.take()
    response = client.post(API_URL, upload_data(files, case))
    assert response.status_code == case.api_status, response.content
    body = response.json()
    assert body["error"] == "The build was not accepted."
    assert_says(body["errors"].get(case.where, []), case.channel_expect.get("api", case.expect))
    return before


def send_cli(files, case, alice):
    args = [str(files[0]), "--by", alice.username]
    if case.name:
        args.append(f"--name={case.name}")
    if case.contents_hash:
        args.append(f"--contents-hash={case.contents_hash}")
    before = snapshot.take()
    with translation.override("en"), pytest.raises(CommandError) as caught:
        call_command("import_build", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert_says([str(caught.value)], case.channel_expect.get("cli", case.expect))
    return before


SEND = {"form": send_form, "api": send_api, "cli": send_cli}


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("case", FILE_CASES, ids=lambda case: case.id)
def test_a_bad_build_is_refused_with_its_reason_and_changes_nothing(
    case, channel, cast, settings, tmp_path
):
    for key, value in case.limits.items():
        setattr(settings, key, value)
    if case.taken:
        take_name(case.taken, cast.bob, tmp_path)
    files = write_files(case, tmp_path / "in")
    before = SEND[channel](files, case, cast.alice)
    snapshot.assert_unchanged(before)


# --- The API alone: tokens, methods, content types, request bodies -----------------------


@dataclass(frozen=True)
class BadRequest:
    id: str
    status: int
    expect: str
    auth: str = "alice"  # whose token; "" none; anything else: the header as written
    method: str = "post"
    body: bytes | None = None  # None: a good multipart build
    content_type: str = ""
    limits: dict = field(default_factory=dict)
    where: str = ""  # the field the message is under ("" for the top level)


def many_fields(count):
    boundary = "XoXoXo"
    parts = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="f{n}"\r\n\r\nx\r\n'
        for n in range(count)
    )
    return (parts + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def many_files(count):
    boundary = "XoXoXo"
    parts = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="tarball"; '
        f'filename="f{n}-tree.tar.bz2"\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n'
        for n in range(count)
    )
    return (parts + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def bad_base64_file():
    """A file part whose base64 transfer encoding breaks off in the middle of the file."""
    boundary = "XoXoXo"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="tarball"; '
        f'filename="py801-2-tree.tar.bz2"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + "QlpoOTFBWSZTWQ" * 1000
        + f"!!\r\n--{boundary}--\r\n"
    )
    return body.encode(), f"multipart/form-data; boundary={boundary}"


FIELDS_BODY, FIELDS_TYPE = many_fields(150)
BASE64_BODY, BASE64_TYPE = bad_base64_file()
FILES_BODY, FILES_TYPE = many_files(150)

REQUEST_CASES = [
    BadRequest("no-token", 401, "Send an API token: Authorization: Token <key>.", auth=""),
    BadRequest("unknown-token", 401, "Missing or unknown API token.", auth="Token not-a-key"),
    BadRequest("empty-token", 401, "Missing or unknown API token.", auth="Token "),
    BadRequest("bearer-scheme", 401, "Missing or unknown API token.", auth="Bearer alice"),
    BadRequest("token-unicode", 401, "Missing or unknown API token.", auth="Token ñandú"),
    BadRequest("coordinator-token", 403, "Your account may not do this.", auth="dave"),
    BadRequest("no-role-token", 403, "Your account may not do this.", auth="eve"),
    BadRequest("put-method", 405, "Method not allowed.", method="put", body=b"x"),
    BadRequest(
        "json-body",
        415,
        "Send the files as multipart/form-data",
        body=b'{"tarball": "py801-2-tree.tar.bz2"}',
        content_type="application/json",
    ),
    BadRequest(
        "urlencoded-body",
        415,
        "Send the files as multipart/form-data",
        body=b"tarball=x&md5=y&contents=z",
        content_type="application/x-www-form-urlencoded",
    ),
    BadRequest(
        "no-content-type", 415, "Send the files as multipart/form-data", body=b"x", content_type=""
    ),
    BadRequest(
        "multipart-without-boundary",
        400,
        "The request is not valid multipart/form-data",
        body=b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--\r\n',
        content_type="multipart/form-data",
        where="__all__",
    ),
    BadRequest(
        "multipart-garbled-boundary",
        400,
        "The request is not valid multipart/form-data",
        body=b"whatever",
        content_type="multipart/form-data; boundary=\x00\x01",
        where="__all__",
    ),
    BadRequest(
        "multipart-without-parts",
        400,
        "This field is required.",
        body=b"just bytes, no parts at all",
        content_type="multipart/form-data; boundary=XoXoXo",
        where="tarball",
    ),
    BadRequest(
        "too-many-fields",
        400,
        "The request has too many fields",
        body=FIELDS_BODY,
        content_type=FIELDS_TYPE,
        where="__all__",
    ),
    BadRequest(
        "too-many-files",
        400,
        "The request has too many files",
        body=FILES_BODY,
        content_type=FILES_TYPE,
        where="__all__",
    ),
    BadRequest(
        "multipart-bad-base64-file",
        400,
        "Could not decode base64 data",
        body=BASE64_BODY,
        content_type=BASE64_TYPE,
        where="__all__",
    ),
    BadRequest(
        "huge-body",
        413,
        "larger than the limit of 1024 bytes",
        body=b"x" * (2 * 1024 * 1024),
        content_type="multipart/form-data; boundary=XoXoXo",
        limits={"MAX_BUILD_BYTES": 1024, "MAX_CONTENTS_BYTES": 1024},
        where="tarball",
    ),
]


def headers_for(case, cast):
    if not case.auth:
        return {}
    user = getattr(cast, case.auth, None)
    if user is None:
        return {"HTTP_AUTHORIZATION": case.auth}
    _token, key = api_token_create(user=user)
    return {"HTTP_AUTHORIZATION": f"Token {key}"}


@pytest.mark.parametrize("case", REQUEST_CASES, ids=lambda case: case.id)
def test_a_bad_api_request_is_refused_with_its_reason_and_changes_nothing(
    case, cast, settings, tmp_path
):
    for key, value in case.limits.items():
        setattr(settings, key, value)
    client = english_client(**headers_for(case, cast))
    send = getattr(client, case.method)
    before = snapshot.take()
    if case.body is None:
        files = write_files(Bad("good", ()), tmp_path / "in")
        response = send(API_URL, upload_data(files, Bad("good", ())))
    else:
        response = send(API_URL, case.body, content_type=case.content_type)
    assert response.status_code == case.status, response.content
    body = response.json()
    messages = body.get("errors", {}).get(case.where, []) if case.where else [body["error"]]
    assert_says(messages, (case.expect,))
    snapshot.assert_unchanged(before)


# --- The form alone ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type", "field", "expect"),
    [
        ({}, "application/x-www-form-urlencoded", "tarball", "This field is required."),
        ({"tarball": "py801-2-tree.tar.bz2"}, None, "tarball", "This field is required."),
        (b"garbage", "multipart/form-data", "__all__", "not valid multipart/form-data"),
    ],
    ids=["no-files", "name-instead-of-file", "multipart-without-boundary"],
)
def test_a_bad_upload_form_post_is_refused_and_changes_nothing(
    data, content_type, field, expect, cast
):
    client = english_client()
    assert client.login(username="alice", password=PASSWORD)
    before = snapshot.take()
    if content_type == "application/x-www-form-urlencoded":
        response = client.post(UPLOAD_URL, "", content_type=content_type)
    elif content_type:
        response = client.post(UPLOAD_URL, data, content_type=content_type)
    else:
        response = client.post(UPLOAD_URL, data)
    assert response.status_code == 400, response.status_code
    assert_says(form_errors(response).get(field, []), (expect,))
    snapshot.assert_unchanged(before)


@pytest.mark.parametrize(
    "case",
    [c for c in REQUEST_CASES if c.content_type.startswith("multipart/") and c.status != 200],
    ids=lambda case: case.id,
)
def test_a_body_the_csrf_check_cannot_read_is_refused_with_its_reason(case, cast, settings):
    """With CSRF enforced the middleware reads the body before the view: a body that cannot
    be taken apart must still get the upload page and its reason, not a bare 400 or a 500."""
    for key, value in case.limits.items():
        setattr(settings, key, value)
    client = english_client(enforce_csrf_checks=True)
    assert client.login(username="alice", password=PASSWORD)
    client.get(UPLOAD_URL)  # the CSRF cookie, as a browser has it
    before = snapshot.take()
    response = client.post(UPLOAD_URL, case.body, content_type=case.content_type)
    if case.where == "tarball" and case.status == 400:
        # Parts the parser could read: no token among them, so CSRF refuses first.
        assert response.status_code == 403
    else:
        assert response.status_code == 400, response.status_code
        assert_says(form_errors(response).get(case.where or "__all__", []), (case.expect,))
    snapshot.assert_unchanged(before)


def test_the_upload_form_refuses_a_coordinator_and_keeps_nothing(cast, tmp_path):
    client = Client()
    assert client.login(username="dave", password=PASSWORD)
    files = write_files(Bad("good", ()), tmp_path / "in")
    before = snapshot.take()
    response = client.post(UPLOAD_URL, upload_data(files, Bad("good", ())))
    assert response.status_code == 403
    snapshot.assert_unchanged(before)


# --- The CLI alone: paths and people -------------------------------------------------------


def _missing(files):
    return files[0].with_name("nothing-here-tree.tar.bz2")


CLI_CASES = [
    ("archive-missing", lambda files: [_missing(files)], "nothing-here-tree.tar.bz2 was not"),
    ("archive-is-a-folder", lambda files: [files[0].parent], "in was not found."),
    (
        "md5-missing-beside",
        lambda files: [files[0], files[1].unlink()][:1],
        "py801-2-tree.tar.bz2.md5 was not found beside the archive.",
    ),
    (
        "contents-missing-beside",
        lambda files: [files[0], files[2].unlink()][:1],
        "py801-2.contents was not found beside the archive.",
    ),
    ("unknown-uploader", lambda files: [files[0], "--by", "mallory"], "No active user named"),
    ("uploader-without-role", lambda files: [files[0], "--by", "eve"], "eve is not in the"),
    (
        "inactive-uploader",
        lambda files: [files[0], "--by", "zoe"],
        "No active user named 'zoe'.",
    ),
]


@pytest.mark.parametrize(("id_", "args", "expect"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_a_bad_import_build_call_fails_with_its_reason_and_changes_nothing(
    id_, args, expect, cast, tmp_path
):
    zoe = make_user("zoe", "uploaders")
    zoe.is_active = False
    zoe.save(update_fields=["is_active"])
    files = write_files(Bad("good", ()), tmp_path / "in")
    argv = [str(arg) for arg in args(files)]
    before = snapshot.take()
    with translation.override("en"), pytest.raises(CommandError) as caught:
        call_command("import_build", *argv, stdout=io.StringIO(), stderr=io.StringIO())
    assert expect in str(caught.value)
    snapshot.assert_unchanged(before)


def test_a_refused_import_does_not_create_the_system_account(db, tmp_path):
    """Without --by the uploader is the `portal` account, created on first use: a refused
    import is not a use."""
    files = write_files(Bad("bad", (), md5="0" * 32 + "  {file}\n"), tmp_path / "in")
    before = snapshot.take()
    with translation.override("en"), pytest.raises(CommandError, match="Checksum mismatch"):
        call_command("import_build", str(files[0]), stdout=io.StringIO())
    snapshot.assert_unchanged(before)


# --- The same refusals in Spanish, the deployment's language --------------------------------


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        (Bad("md5", (), "md5", md5="0" * 32 + "  {file}\n"), "La suma de verificación no coincide"),
        (Bad("taken", (), "name", taken="py801-2"), "ya fue usado por otra compilación"),
        (Bad("json", (), "contents", contents=b"hola"), "El archivo .contents no es JSON"),
    ],
    ids=["md5-mismatch", "name-reused", "contents-not-json"],
)
def test_the_reasons_are_given_in_spanish_by_default(case, expect, cast, tmp_path):
    if case.taken:
        take_name(case.taken, cast.bob, tmp_path)
    files = write_files(case, tmp_path / "in")
    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    before = snapshot.take()
    response = client.post(UPLOAD_URL, upload_data(files, case))
    assert response.status_code == 400
    assert_says(form_errors(response).get(case.where, []), (expect,))
    snapshot.assert_unchanged(before)
