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
