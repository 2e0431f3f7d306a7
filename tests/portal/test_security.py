"""Who may reach what: every URL pattern, every role, CSRF on every form, and the deploy check.

`ACCESS` is the expectation table. `test_the_table_covers_every_url_pattern` fails when a URL
pattern appears that it does not list (or it lists one that is gone), so nobody can add an
unprotected page without saying here who may use it.
"""

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from portal.models import ApiToken, LoginAttempt, LoginLockout
from portal.services import api_token_create
from releases import offers
from releases.models import AuditEvent, Build, Deployment, OfferedEntry
from schools.forms import ServersImportConfirmForm
from schools.models import SchoolServer
from schools.services import server_token_rotate, servers_import_plan

from ..factories import PASSWORD, english_client, write_build

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# --- The expectation table ------------------------------------------------------------------

ACTORS = ("anonymous", "eve", "dave", "alice", "carol", "root")
EVERYONE = {"eve", "dave", "alice", "carol", "root"}
STAFF_ROLES = {"dave", "alice", "carol", "root"}  # any of the three roles
UPLOADERS = {"alice", "root"}
APPROVERS = {"carol", "root"}
EDITORS = UPLOADERS | APPROVERS  # may set a contents hash or retry a publication
COORDINATORS = {"dave", "root"}  # may add and edit school servers and issue their tokens
ADMINS = {"root"}  # is_staff


def page(allowed):
    """An HTML view behind login: anonymous → login page, a user without the role → 403."""
    if allowed is None:
        return {a: "login" if a == "anonymous" else "405" for a in ACTORS}
    return {a: "login" if a == "anonymous" else "ok" if a in allowed else "403" for a in ACTORS}


def api(allowed):
    """A JSON view: no credentials → 401, a user without the role → 403, never a redirect."""
    return {a: "401" if a == "anonymous" else "ok" if a in allowed else "403" for a in ACTORS}


def same(outcome):
    return dict.fromkeys(ACTORS, outcome)


def admin(get="ok", post="ok"):
    """The Django admin: anyone but staff is sent to log in (our login, see portal/urls.py)."""
    return {
        "GET": {a: get if a in ADMINS else "login" for a in ACTORS},
        "POST": {a: post if a in ADMINS else "login" for a in ACTORS},
    }


# What even a superuser may not do there: tokens are never edited (only made or revoked),
# builds only arrive by upload, and the audit trail is read-only.
ADMIN_MODELS = {
    "auth/group": set(),
    "auth/user": set(),
    "portal/apitoken": {"change"},
    "portal/loginattempt": {"add", "change"},
    "portal/loginlockout": {"add", "change", "delete"},
    "releases/build": {"add", "change"},
    "releases/auditevent": {"add", "change", "delete"},
    "schools/schoolserver": set(),
}

ACCESS = {
    "": {"GET": page(EVERYONE), "POST": page(None)},
    "healthz": {"GET": same("ok"), "POST": same("405")},
    # Prometheus: a bearer token or an allowed address, never a session; with neither
    # configured (as here), nobody (tests/portal/test_metrics.py).
    "metrics": {"GET": same("403"), "POST": same("405")},
    "profile/": {"GET": page(EVERYONE), "POST": page(EVERYONE)},
    "login/": {"GET": same("ok"), "POST": same("ok")},
    "logout/": {"GET": page(None), "POST": same("login")},
    "i18n/setlang/": {"GET": same("ok"), "POST": same("ok")},
    "builds/": {"GET": page(EVERYONE), "POST": page(None)},
    "upload/": {"GET": page(UPLOADERS), "POST": page(UPLOADERS)},
    # The upload page's chunks (JSON, with the session and its CSRF token).
    "upload/chunked/": {"GET": page(None), "POST": page(UPLOADERS)},
    "upload/chunked/<str:upload_id>/": {"GET": page(UPLOADERS), "POST": page(None)},
    "builds/<str:name>/": {"GET": page(EVERYONE), "POST": page(None)},
    "builds/<str:name>/status/": {"GET": page(EVERYONE), "POST": page(None)},
    "builds/<str:name>/contents-hash/": {"GET": page(None), "POST": page(EDITORS)},
    "builds/<str:name>/retry/": {"GET": page(None), "POST": page(EDITORS)},
    "builds/<str:name>/contents/": {"GET": page(EVERYONE), "POST": page(None)},
    "builds/<str:name>/xo-helper/": {"GET": page(None), "POST": page(EDITORS)},
    "builds/<str:name>/promote/": {"GET": page(APPROVERS), "POST": page(APPROVERS)},
    "builds/<str:name>/withdraw/": {"GET": page(None), "POST": page(APPROVERS)},
    "builds/<str:name>/recall/": {"GET": page(None), "POST": page(APPROVERS)},
    # The USB kit: a tar download, audited (releases.usb).
    "builds/<str:name>/usb-kit/": {"GET": page(EDITORS), "POST": page(None)},
    "deployments/": {"GET": page(EVERYONE), "POST": page(None)},
    "deployments/stop-all/": {"GET": page(None), "POST": page(APPROVERS)},
    "deployments/drift/": {"GET": page(None), "POST": page(APPROVERS)},
    "deployments/<int:pk>/": {"GET": page(EVERYONE), "POST": page(None)},
    "deployments/<int:pk>/status/": {"GET": page(EVERYONE), "POST": page(None)},
    "deployments/<int:pk>/rollback/": {"GET": page(None), "POST": page(APPROVERS)},
    # Writes through the API take a token only (they skip CSRF): a session gets 401.
    "api/builds/": {"GET": api(STAFF_ROLES), "POST": same("401")},
    "api/builds/<str:name>/": {
        "GET": api(STAFF_ROLES),
        "POST": {a: "405" if a in STAFF_ROLES else api(STAFF_ROLES)[a] for a in ACTORS},
    },
    # A build's update impact against another (releases.impact): read like the build.
    "api/builds/<str:name>/diff/<str:old>/": {
        "GET": api(STAFF_ROLES),
        "POST": {a: "405" if a in STAFF_ROLES else api(STAFF_ROLES)[a] for a in ACTORS},
    },
    # The XO helper's one-time link is its only authority: an unknown one is gone (410) for
    # everybody, session or not, and changes nothing.
    "xo/<str:token>": {"GET": same("ok"), "POST": same("405")},
    "xo/<str:token>/contents": {"GET": same("ok"), "POST": same("405")},
    "xo/<str:token>/hash": {"GET": same("405"), "POST": same("ok")},
    # A build machine's chunks: a token only, like every API write.
    "api/uploads/": {"GET": same("401"), "POST": same("401")},
    "api/uploads/<str:upload_id>/": {"GET": same("401"), "POST": same("401")},
    # School servers authenticate with their own bearer token, never a session.
    "api/schools/checkin/": {"GET": same("405"), "POST": same("401")},
    # Laptop reports: HTTP Basic or an API token of a reporter, never a session
    # (tests/schools/test_laptop_report_api.py walks the reporters' side).
    "api/laptops/report/": {"GET": same("405"), "POST": same("401")},
    "schools/": {"GET": page(EVERYONE), "POST": page(None)},
    "schools/client/": {"GET": page(EVERYONE), "POST": page(None)},
    "schools/client/xs-sync-report": {"GET": page(EVERYONE), "POST": page(None)},
    "schools/builds/<str:name>/": {"GET": page(EVERYONE), "POST": page(None)},
    "schools/servers/add/": {"GET": page(COORDINATORS), "POST": page(COORDINATORS)},
    "schools/servers/import/": {"GET": page(COORDINATORS), "POST": page(COORDINATORS)},
    "schools/servers/import/confirm/": {"GET": page(None), "POST": page(COORDINATORS)},
    "schools/<str:hostname>/edit/": {"GET": page(COORDINATORS), "POST": page(COORDINATORS)},
    "schools/<str:hostname>/token/": {"GET": page(COORDINATORS), "POST": page(COORDINATORS)},
    "schools/<str:hostname>/": {"GET": page(EVERYONE), "POST": page(None)},
    # Ours (it shadows the admin's own login, which would skip the throttle).
    "admin/login/": {"GET": same("login"), "POST": same("login")},
    "admin/": admin(),
    # For a non-staff user the admin's logout only sends them to the admin index.
    "admin/logout/": {
        "GET": {a: "405" if a in ADMINS else "login" if a == "anonymous" else "ok" for a in ACTORS},
        "POST": {a: "login" if a in ADMINS | {"anonymous"} else "ok" for a in ACTORS},
    },
    "admin/password_change/": admin(),
    "admin/password_change/done/": admin(post="405"),
    # Without a model to search, the admin's autocomplete answers 403 even to a superuser.
    "admin/autocomplete/": admin(get="403", post="405"),
    "admin/jsi18n/": admin(post="405"),
    "admin/r/<path:content_type_id>/<path:object_id>/": admin(),
    "admin/^(?P<app_label>auth|portal|releases|schools)/$": admin(),
    "admin/(?P<url>.*)$": admin(),
    "admin/auth/user/<id>/password/": admin(),
}
for _model, _forbidden in ADMIN_MODELS.items():
    for _suffix in ("", "<path:object_id>/history/", "<path:object_id>/"):
        ACCESS[f"admin/{_model}/{_suffix}"] = admin()
    _add, _delete = ("403" if name in _forbidden else "ok" for name in ("add", "delete"))
    ACCESS[f"admin/{_model}/add/"] = admin(get=_add, post=_add)
    ACCESS[f"admin/{_model}/<path:object_id>/delete/"] = admin(get=_delete, post=_delete)
    # Viewing is allowed; saving a change only where the admin permits it.
    ACCESS[f"admin/{_model}/<path:object_id>/change/"] = admin(
        post="403" if "change" in _forbidden else "ok"
    )


def url_patterns(patterns=None, prefix=""):
    """Every (route, pattern) the resolver knows, depth first."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            yield from url_patterns(entry.url_patterns, prefix + str(entry.pattern))
        else:
            assert isinstance(entry, URLPattern)
            yield prefix + str(entry.pattern), entry


def test_the_table_covers_every_url_pattern():
    routes = {route for route, _pattern in url_patterns()}
    assert not routes - ACCESS.keys(), "URL patterns with no expectation in ACCESS"
    assert not ACCESS.keys() - routes, "ACCESS lists URL patterns that no longer exist"


# --- A world with one of everything ---------------------------------------------------------


@pytest.fixture
def world(cast, published):
    """A published and offered build, its deployment, a school server with a token, an API
    token; `values` fills the path converters, `admin_ids` the admin's object ids."""

    class World:
        build = published("py700-1")
        deployment = offers.build_promote(
            build=build, acting_user=cast.carol, priority="normal", reason="tested in a school"
        )
        server = SchoolServer.objects.create(
            hostname="xs-itaugua-1.local", name="xs", school="Escuela Itauguá", department="Central"
        )
        server_key = server_token_rotate(server=server)
        token, token_key = api_token_create(user=cast.alice, name="build machine")

    World.values = {
        "name": World.build.name,
        "hostname": World.server.hostname,
        "pk": World.deployment.pk,
        "id": cast.alice.pk,
        "content_type_id": ContentType.objects.get_for_model(Build).pk,
        "app_label": "portal",
        "url": "nothing-here/",
        "token": "no-such-link",
        "upload_id": "no-such-upload",
        "old": World.build.name,
    }
    World.admin_ids = {
        "auth/group": Group.objects.first().pk,
        "auth/user": cast.alice.pk,
        "portal/apitoken": World.token.pk,
        "portal/loginattempt": LoginAttempt.objects.create(username="mallory", ip="192.0.2.1").pk,
        "portal/loginlockout": LoginLockout.objects.create(username="mallory", keys=["ip"]).pk,
        "releases/build": World.build.pk,
        "releases/auditevent": AuditEvent.objects.first().pk,
        "schools/schoolserver": World.server.pk,
    }
    World.cast = cast
    return World


CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")
REGEX_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def url_for(route: str, world) -> str:
    values = dict(world.values)
    model = "/".join(route.split("/")[1:3])
    if route.startswith("admin/") and model in world.admin_ids:
        values["object_id"] = world.admin_ids[model]
    elif route.startswith("admin/r/"):
        values["object_id"] = world.build.pk
    path = REGEX_GROUP.sub(lambda m: str(values[m.group(1)]), route).replace("^", "")
    path = CONVERTER.sub(lambda m: str(values[m.group(1)]), path)
    url = "/" + path.replace("$", "")
    # Django drops a regex's leading ^ when it joins the routes of included patterns.
    reached = resolve(url).route
    assert reached.replace("^", "") == route.replace("^", ""), f"{url} does not reach {route}"
    return url


IMPORT_CSV = "hostname,school\nxs-imported.local,Escuela importada\n"


def import_payload() -> str:
    """The confirm form of a preview of IMPORT_CSV, as the preview page would send it now."""
    plan = servers_import_plan(text=IMPORT_CSV)
    return ServersImportConfirmForm.payload_for(text=IMPORT_CSV, name="servers.csv", plan=plan)


def post_data(route: str, world) -> dict:
    """What a real form would send, so an allowed POST (or a missing check) would act."""
    return {
        "login/": {"username": "root", "password": PASSWORD},
        "i18n/setlang/": {"language": "en", "next": "/"},
        "profile/": {"build_invalid": "on"},
        "builds/<str:name>/contents-hash/": {"contents_hash": "abcdef0123456789"},
        "builds/<str:name>/promote/": {"priority": "normal", "reason": "tested in two schools"},
        "deployments/stop-all/": {"reason": "a bad build reached the schools"},
        "deployments/drift/": {"choice": "overwrite"},
        "schools/servers/add/": {"hostname": "xs-new.local", "school": "Escuela nueva"},
        "schools/servers/import/": {"file": SimpleUploadedFile("servers.csv", IMPORT_CSV.encode())},
        "schools/servers/import/confirm/": {"payload": import_payload()},
        "schools/<str:hostname>/edit/": {
            "hostname": world.server.hostname,
            "school": "Escuela renombrada",
            "active": "",
        },
        "admin/portal/apitoken/add/": {"user": world.cast.alice.pk, "name": "from the admin"},
        "admin/portal/apitoken/": {"action": "revoke", "_selected_action": [world.token.pk]},
        "admin/schools/schoolserver/": {
            "action": "new_token",
            "_selected_action": [world.server.pk],
        },
        "admin/auth/user/<path:object_id>/delete/": {"post": "yes"},
    }.get(route, {})


def snapshot():
    """Everything a request could change that matters."""
    cfg = Path(settings.OATSLITE_UPDATES_CFG)
    return {
        "events": list(AuditEvent.objects.order_by("pk").values_list("pk", flat=True)),
        "builds": list(
            Build.objects.order_by("name").values_list("name", "status", "contents_hash")
        ),
        "deployments": list(Deployment.objects.order_by("pk").values_list("pk", "status")),
        "offers": list(OfferedEntry.objects.order_by("pk").values_list("pk", "active", "position")),
        "tokens": list(ApiToken.objects.order_by("pk").values_list("pk", "key_hash", "revoked_at")),
        "servers": list(
            SchoolServer.objects.order_by("hostname").values_list(
                "hostname", "token_hash", "active"
            )
        ),
        "users": list(
            User.objects.order_by("username").values_list("username", "password", "is_active")
        ),
        "groups": list(Group.objects.order_by("name").values_list("name", flat=True)),
        "attempts": LoginAttempt.objects.count(),
        "updates_cfg": cfg.read_bytes() if cfg.exists() else None,
    }


def outcome(response) -> str:
    if response.status_code in (301, 302) and (
        response["Location"].startswith(("/login/", "/admin/login/"))
    ):
        return "login"
    if response.status_code in (401, 403, 405):
        return str(response.status_code)
    if response.status_code >= 500:
        return f"error {response.status_code}"
    return "ok"


def client_for(world, actor, **kwargs):
    client = english_client(**kwargs)
    if actor != "anonymous":
        client.force_login(getattr(world.cast, actor))
    return client


CASES = [(route, method) for route in sorted(ACCESS) for method in ("GET", "POST")]


@pytest.mark.parametrize(("route", "method"), CASES)
def test_each_role_reaches_only_what_it_may(world, route, method):
    """Refused actors go first, so each refusal is checked against an untouched world and
    must leave it untouched; then the allowed ones act."""
    url = url_for(route, world)
    expected = ACCESS[route][method]
    for actor in sorted(ACTORS, key=lambda a: expected[a] == "ok"):
        before = snapshot()
        client = client_for(world, actor)
        data = post_data(route, world)
        response = client.get(url) if method == "GET" else client.post(url, data)
        assert outcome(response) == expected[actor], (
            f"{method} {url} as {actor}: {response.status_code} "
            f"{response.get('Location', '')} expected {expected[actor]}"
        )
        if expected[actor] != "ok" and not (route.endswith("logout/") and method == "POST"):
            assert snapshot() == before, f"{method} {url} as {actor} changed something"


def test_an_approver_cannot_approve_their_own_build(client, cast, published):
    cast.carol.groups.add(Group.objects.get(name="uploaders"))
    build = published("py701-1", uploader=cast.carol)
    client.force_login(cast.carol)
    before = snapshot()

    response = client.post(
        f"/builds/{build.name}/promote/", {"priority": "normal", "reason": "mine"}
    )

    assert response.status_code == 400
    assert snapshot() == before
    assert not Deployment.objects.exists()


# --- CSRF -----------------------------------------------------------------------------------

# The API and the XO helper's link take no session, so no CSRF token either: their token is
# their authority (tests/releases/test_xo_helper.py posts without one).
CSRF_CASES = sorted(
    route
    for route, methods in ACCESS.items()
    if methods["POST"]["root"] in ("ok", "login") and not route.startswith(("api/", "xo/"))
)


@pytest.mark.parametrize("route", CSRF_CASES)
def test_every_form_refuses_a_post_without_the_csrf_token(world, route):
    """Refused with 403 and nothing changed; the same POST with the token gets through."""
    url = url_for(route, world)
    client = client_for(world, "root", enforce_csrf_checks=True)
    before = snapshot()

    response = client.post(url, post_data(route, world))

    assert response.status_code == 403, f"POST {url} without a CSRF token"
    assert snapshot() == before
    assert client.get("/builds/").status_code == 200, "the refused POST logged root out"
    with_token = client.post(
        url, post_data(route, world), HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value
    )
    assert with_token.status_code != 403


@pytest.mark.parametrize("cookie", [False, True], ids=["no cookie", "stale page"])
def test_an_upload_without_the_csrf_token_stores_nothing(world, tmp_path, cookie):
    """With the CSRF cookie set (a page opened before logging in again), the check reads the
    form, and so receives every file, before it refuses: they must not stay on disk."""
    client = client_for(world, "alice", enforce_csrf_checks=True)
    if cookie:
        client.get("/upload/")
        assert "csrftoken" in client.cookies
    tarball, md5, contents = write_build(tmp_path / "in", "py702-1")
    before = snapshot()

    with tarball.open("rb") as t, md5.open("rb") as m, contents.open("rb") as c:
        response = client.post(
            "/upload/", {"name": "py702-1", "tarball": t, "md5": m, "contents": c}
        )

    assert response.status_code == 403
    assert snapshot() == before
    leftovers = [p for p in Path(settings.UPLOAD_TEMP_DIR).rglob("*") if p.is_file()]
    assert leftovers == []


# --- Tokens at rest -------------------------------------------------------------------------


def _stored_text(model) -> str:
    """Every column of every row, as the database holds them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {model._meta.db_table}")  # noqa: S608 - our table name
        return repr(cursor.fetchall())


def test_api_tokens_are_stored_only_as_a_hash(world):
    stored = _stored_text(ApiToken)
    assert world.token_key not in stored
    assert world.token_key[:9] not in stored  # only an 8-character prefix is kept
    assert world.token.key_hash in stored
    assert ApiToken.objects.authenticate(world.token_key) == world.token


def test_school_server_tokens_are_stored_only_as_a_hash(world):
    stored = _stored_text(SchoolServer)
    assert world.server_key not in stored
    assert world.server_key[:9] not in stored
    assert SchoolServer.objects.by_token(world.server_key) == world.server


@pytest.mark.parametrize("scheme", ["Token", "Bearer"])
def test_a_wrong_token_is_refused_with_401(world, scheme):
    url = "/api/builds/" if scheme == "Token" else "/api/schools/checkin/"
    key = world.token_key if scheme == "Token" else world.server_key
    near_miss = key[:-1] + ("A" if key[-1] != "A" else "B")
    client = Client()

    response = (client.get if scheme == "Token" else client.post)(
        url, HTTP_AUTHORIZATION=f"{scheme} {near_miss}"
    )

    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"


def test_a_revoked_api_token_no_longer_works(world):
    ApiToken.objects.filter(pk=world.token.pk).update(revoked_at=world.build.created_at)
    response = Client().get("/api/builds/", HTTP_AUTHORIZATION=f"Token {world.token_key}")
    assert response.status_code == 401


# --- What the responses say about their content ---------------------------------------------

SAFE_TYPES = ("text/html", "application/json", "text/plain", "text/csv")
# Binary downloads, each deliberate: never rendered by a browser, always an attachment.
DOWNLOADS = {"builds/<str:name>/usb-kit/": "application/x-tar"}


@pytest.mark.parametrize("route", sorted(r for r in ACCESS if not r.startswith("admin/")))
def test_no_response_carries_an_executable_content_type(world, route):
    response = client_for(world, "root").get(url_for(route, world))
    if response.status_code in (301, 302, 405):
        return
    content_type = response["Content-Type"].split(";")[0].strip()
    if route in DOWNLOADS:
        assert content_type == DOWNLOADS[route]
        assert response["Content-Disposition"].startswith("attachment;")
    else:
        assert content_type in SAFE_TYPES, f"{route}: {content_type}"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" in response


def test_the_client_script_is_downloaded_as_plain_text(world):
    response = client_for(world, "dave").get("/schools/client/xs-sync-report")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="xs-sync-report"'
    assert response["X-Content-Type-Options"] == "nosniff"


def test_the_server_list_csv_is_an_attachment_and_escapes_nothing_into_html(world):
    SchoolServer.objects.filter(pk=world.server.pk).update(last_error="<script>alert(1)</script>")
    client = client_for(world, "dave")

    csv_response = client.get("/schools/?format=csv")
    page_response = client.get(f"/schools/{world.server.hostname}/")

    assert csv_response["Content-Type"] == "text/csv; charset=utf-8"
    assert csv_response["Content-Disposition"].startswith("attachment;")
    assert csv_response["X-Content-Type-Options"] == "nosniff"
    assert "<script>alert(1)</script>" not in page_response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page_response.content.decode()


# --- Content-Security-Policy ----------------------------------------------------------------


def test_every_page_carries_a_strict_content_security_policy(world):
    response = client_for(world, "dave").get(f"/builds/{world.build.name}/")
    header = response["Content-Security-Policy"]
    policy = {part.split()[0]: part.split()[1:] for part in header.split(";")}
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]
    assert "unsafe" not in response["Content-Security-Policy"]


INLINE = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle\s*=|\son[a-z]+\s*=|javascript:", re.IGNORECASE
)


def test_no_template_needs_inline_script_or_style():
    """What the policy would block: inline <script>, <style>, style="…", on…= handlers."""
    folders = [BASE_DIR / "templates", *(BASE_DIR / app / "templates" for app in ("releases",))]
    offenders = [
        f"{path.relative_to(BASE_DIR)}: {match.group(0)}"
        for folder in folders
        for path in sorted(folder.rglob("*.html"))
        for match in INLINE.finditer(path.read_text())
    ]
    assert offenders == []


def test_htmx_is_told_not_to_inject_its_indicator_style(world):
    body = client_for(world, "dave").get("/builds/").content.decode()
    meta = re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", body)
    assert meta, "the htmx-config meta is missing"
    assert '"includeIndicatorStyles": false' in meta.group(1)
    assert '"allowEval": false' in meta.group(1)


# --- check --deploy -------------------------------------------------------------------------


def _deploy_check(tmp_path, **extra):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PORTAL_"))
    }
    env.update(
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_DEBUG="false",
        DJANGO_ALLOWED_HOSTS="portal.example.org",
        PORTAL_DATA_DIR=str(tmp_path / "deploy"),
        **extra,
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_deploy_check_passes_with_production_settings(tmp_path):
    result = _deploy_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_deploy_check_would_catch_plain_http(tmp_path):
    result = _deploy_check(tmp_path, DJANGO_HTTPS="false")
    assert result.returncode != 0
    assert "security.W008" in result.stderr + result.stdout
