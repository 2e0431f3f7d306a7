"""The portal's own 403, 404, CSRF and 500 pages, in the reader's language (Django's bare
English pages told a Spanish-speaking coordinator nothing)."""

import pytest
from django.test import Client
from django.urls import include, path

from ..factories import english_client


def boom(request):
    raise RuntimeError("a bug")


urlpatterns = [path("boom/", boom), path("", include("portal.urls"))]


@pytest.mark.parametrize(
    ("language", "expected"), [("es", "Aquí no hay nada"), ("en", "There is nothing here")]
)
def test_a_missing_page_says_so_in_the_readers_language(cast, language, expected):
    client = english_client() if language == "en" else Client()
    client.force_login(cast.alice)
    response = client.get("/builds/no-such-build/")
    assert response.status_code == 404
    body = response.content.decode()
    assert expected in body and f'<html lang="{language}">' in body


def test_a_forbidden_action_explains_the_roles(cast):
    client = Client()
    client.force_login(cast.dave)
    response = client.get("/upload/")
    assert response.status_code == 403
    assert "Su cuenta no tiene permiso para hacer esto" in response.content.decode()


def test_an_expired_form_says_what_to_do(cast):
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast.carol)
    response = client.post("/deployments/stop-all/", {"reason": "x"})
    assert response.status_code == 403
    assert "El formulario había vencido" in response.content.decode()


def test_a_bug_gets_the_portals_500_page(cast, settings):
    settings.ROOT_URLCONF = __name__
    client = Client(raise_request_exception=False)
    client.force_login(cast.alice)
    response = client.get("/boom/")
    assert response.status_code == 500
    assert "Algo falló en el portal" in response.content.decode()
