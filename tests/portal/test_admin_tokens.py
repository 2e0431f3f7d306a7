"""API tokens in the Django admin: created through the token service, shown once, revocable."""

import re

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from portal.models import ApiToken, hash_token
from portal.services import api_token_create

ADD_URL = "/admin/portal/apitoken/add/"
LIST_URL = "/admin/portal/apitoken/"
# token_urlsafe(30): 40 characters of the URL-safe alphabet, shown between ": " and " —".
KEY_IN_MESSAGE = re.compile(r": ([A-Za-z0-9_-]{40}) —")


@pytest.fixture
def admin_client(cast):
    client = Client()
    client.force_login(cast.root)
    return client


def create_token(client, user, name="image builder"):
    return client.post(ADD_URL, {"user": user.pk, "name": name}, follow=True)


def test_it_shows_the_new_key_once_in_a_message(admin_client, cast):
    response = create_token(admin_client, cast.alice)
    assert response.status_code == 200
    keys = KEY_IN_MESSAGE.findall(response.content.decode())
    assert len(keys) == 1
    assert not KEY_IN_MESSAGE.search(admin_client.get(LIST_URL).content.decode())


def test_it_stores_only_the_hash_of_the_key(admin_client, cast):
    response = create_token(admin_client, cast.alice)
    [key] = KEY_IN_MESSAGE.findall(response.content.decode())
    token = ApiToken.objects.get()
    assert (token.user, token.name) == (cast.alice, "image builder")
    assert token.key_hash == hash_token(key)
    assert key not in (token.key_hash, token.prefix, token.name)


def test_it_creates_a_key_that_authenticates(admin_client, cast):
    response = create_token(admin_client, cast.alice)
    [key] = KEY_IN_MESSAGE.findall(response.content.decode())
    assert ApiToken.objects.authenticate(key).user == cast.alice


def test_it_revokes_the_selected_tokens(admin_client, cast):
    token, key = api_token_create(user=cast.alice)
    other, other_key = api_token_create(user=cast.bob)
    response = admin_client.post(
        LIST_URL, {"action": "revoke", "_selected_action": [token.pk]}, follow=True
    )
    assert response.status_code == 200
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert ApiToken.objects.authenticate(key) is None
    assert ApiToken.objects.authenticate(other_key) == other


def test_it_keeps_the_first_revocation_time(admin_client, cast):
    token, _key = api_token_create(user=cast.alice)
    admin_client.post(LIST_URL, {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    first = token.revoked_at
    admin_client.post(LIST_URL, {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at == first


@pytest.mark.parametrize("who", ["alice", "carol", "dave", "eve"])
def test_it_keeps_people_without_staff_status_out(client, cast, who):
    client.force_login(getattr(cast, who))
    for url in (ADD_URL, LIST_URL):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    response = client.post(ADD_URL, {"user": cast.alice.pk, "name": "sneaky"})
    assert response.status_code == 302
    assert not ApiToken.objects.exists()


def test_it_keeps_anonymous_visitors_out(client, cast):
    response = client.post(ADD_URL, {"user": cast.alice.pk, "name": "sneaky"})
    assert response.status_code == 302
    assert not ApiToken.objects.exists()


def test_it_records_which_token_was_added_in_the_admin_history(admin_client, cast):
    create_token(admin_client, cast.alice)
    token = ApiToken.objects.get()
    assert LogEntry.objects.get().object_repr == str(token)
