"""The portal speaks Spanish unless the reader picks English, logged in or not."""

import pytest
from django.test import Client
from django.urls import reverse

LOGIN = reverse("login")
BUILDS = reverse("releases:build_list")
SET_LANGUAGE = reverse("set_language")


@pytest.fixture
def csrf_client():
    return Client(enforce_csrf_checks=True)


def switch_language(client, language, next_url):
    """What the language form in the login page's header does: POST with its CSRF token."""
    client.get(LOGIN)
    token = client.cookies["csrftoken"].value
    return client.post(
        SET_LANGUAGE, {"language": language, "next": next_url, "csrfmiddlewaretoken": token}
    )


def test_it_shows_the_login_page_in_spanish_by_default(client, db):
    html = client.get(LOGIN).content.decode()
    assert '<html lang="es">' in html
    assert "Iniciar sesión" in html


def test_it_offers_the_language_switch_on_the_login_page(client, db):
    html = client.get(LOGIN).content.decode()
    assert f'action="{SET_LANGUAGE}"' in html
    assert '<option value="en"' in html


def test_it_switches_an_anonymous_visitor_to_english(csrf_client, db):
    response = switch_language(csrf_client, "en", BUILDS)
    assert response.status_code == 302
    assert response["Location"] == BUILDS
    assert csrf_client.cookies["django_language"].value == "en"
    # /builds/ needs a login: the visitor lands on the login page, now in English.
    html = csrf_client.get(BUILDS, follow=True).content.decode()
    assert '<html lang="en">' in html
    assert "Log in" in html
    assert "Iniciar sesión" not in html


def test_it_switches_a_logged_in_user_to_english_and_back(csrf_client, cast):
    csrf_client.force_login(cast.dave)
    switch_language(csrf_client, "en", BUILDS)
    assert "<h1>Builds</h1>" in csrf_client.get(BUILDS).content.decode()
    switch_language(csrf_client, "es", BUILDS)
    assert "<h1>Compilaciones</h1>" in csrf_client.get(BUILDS).content.decode()


def test_it_refuses_a_language_switch_without_the_csrf_token(csrf_client, db):
    response = csrf_client.post(SET_LANGUAGE, {"language": "en", "next": BUILDS})
    assert response.status_code == 403
    assert "django_language" not in csrf_client.cookies


def test_it_does_not_redirect_to_another_site_after_switching(csrf_client, db):
    response = switch_language(csrf_client, "en", "https://evil.example/")
    assert response.status_code == 302
    assert response["Location"] == "/"


# --- The deployment's language wins over the browser's ------------------------------------


def test_an_english_browser_gets_the_deployments_language(client, cast):
    client.force_login(cast.alice)
    page = client.get("/builds/", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")
    assert page.headers["Content-Language"] == "es"


def test_the_readers_own_choice_wins(client, cast):
    client.force_login(cast.alice)
    client.post(SET_LANGUAGE, {"language": "en", "next": "/builds/"})
    page = client.get("/builds/", HTTP_ACCEPT_LANGUAGE="es")
    assert page.headers["Content-Language"] == "en"


def test_a_json_client_may_still_ask_with_accept_language(cast):
    from portal.services import api_token_create

    _token, key = api_token_create(user=cast.alice)
    client = Client(HTTP_AUTHORIZATION=f"Token {key}", HTTP_ACCEPT_LANGUAGE="en")
    response = client.get("/api/builds/nope/")
    assert response.status_code == 404 and "No build is named" in response.json()["error"]


def test_the_default_language_is_a_setting(tmp_path):
    """PORTAL_DEFAULT_LANGUAGE, checked at start-up."""
    import subprocess
    import sys

    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DJANGO_SECRET_KEY": "x",
        "PORTAL_DATA_DIR": str(tmp_path),
    }
    code = "from django.conf import settings; print(settings.LANGUAGE_CODE)"
    ok = subprocess.run(
        [sys.executable, "-c", code], env={**env, "PORTAL_DEFAULT_LANGUAGE": "en"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert ok.stdout.strip() == "en", ok.stderr
    bad = subprocess.run(
        [sys.executable, "-c", code], env={**env, "PORTAL_DEFAULT_LANGUAGE": "fr"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode != 0 and "PORTAL_DEFAULT_LANGUAGE must be one of es, en" in bad.stderr
