"""Login throttling: too many failures for a user name or from an address → 429, no password
check, until the window passes; a success resets the user name's count."""

import logging
import threading
from datetime import timedelta

import pytest
from django.contrib.auth.backends import ModelBackend
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from portal.models import LoginAttempt, LoginLockout
from releases.models import AuditEvent

from ..factories import PASSWORD, english_client

BACKEND = "tests.portal.test_login_throttle.CountingBackend"


class CountingBackend(ModelBackend):
    """Django's own backend, counting how often a password is actually checked."""

    calls = 0
    lock = threading.Lock()

    def authenticate(self, request, username=None, password=None, **kwargs):
        with CountingBackend.lock:
            CountingBackend.calls += 1
        return super().authenticate(request, username=username, password=password, **kwargs)


@pytest.fixture(autouse=True)
def limits(settings):
    settings.LOGIN_FAILURE_LIMIT = 5
    settings.LOGIN_FAILURE_IP_LIMIT = 20
    settings.LOGIN_FAILURE_WINDOW = 900
    settings.LOGIN_CLIENT_IP_HEADER = ""
    settings.AUTHENTICATION_BACKENDS = [BACKEND]
    CountingBackend.calls = 0
    return settings


WRONG = "wrong password"


def log_in(client, username, password=WRONG, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def is_logged_in(client) -> bool:
    return "_auth_user_id" in client.session


@pytest.fixture
def client():
    return english_client()


def test_it_refuses_further_attempts_without_checking_the_password(client, cast):
    for _ in range(5):
        assert log_in(client, "carol").status_code == 200
    assert CountingBackend.calls == 5

    response = log_in(client, "carol", PASSWORD)

    assert response.status_code == 429
    assert CountingBackend.calls == 5
    assert not is_logged_in(client)
    assert "Too many failed logins. Try again in 15 minutes." in response.content.decode()
    assert 0 < int(response["Retry-After"]) <= 900
    assert LoginAttempt.objects.count() == 5


def test_the_user_name_counts_whatever_its_case(client, cast):
    for name in ("carol", "Carol", " CAROL ", "carol", "cArol"):
        log_in(client, name)
    assert log_in(client, "carol", PASSWORD).status_code == 429


def test_a_success_resets_the_user_names_count(client, cast):
    for _ in range(4):
        log_in(client, "carol")

    response = log_in(client, "carol", PASSWORD)

    assert response.status_code == 302
    assert is_logged_in(client)
    assert not LoginAttempt.objects.filter(username="carol").exists()


def test_the_count_of_one_user_does_not_lock_out_another(client, cast):
    for _ in range(6):
        log_in(client, "carol")
    assert log_in(Client(), "dave", PASSWORD).status_code == 302


def test_one_address_is_throttled_across_user_names(client, cast, settings):
    settings.LOGIN_FAILURE_IP_LIMIT = 3
    for name in ("root", "carol", "nobody"):
        log_in(client, name, REMOTE_ADDR="203.0.113.7")

    refused = log_in(client, "alice", PASSWORD, REMOTE_ADDR="203.0.113.7")
    elsewhere = log_in(Client(), "alice", PASSWORD, REMOTE_ADDR="198.51.100.2")

    assert refused.status_code == 429
    assert elsewhere.status_code == 302


def test_behind_a_proxy_the_configured_header_gives_the_address(client, cast, settings):
    settings.LOGIN_CLIENT_IP_HEADER = "X-Real-IP"
    log_in(client, "carol", REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="203.0.113.9")
    log_in(client, "carol", REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="not an address")
    # Only the proxy on this machine is believed: a client reaching gunicorn directly
    # cannot choose the address its failures count against.
    log_in(client, "carol", REMOTE_ADDR="198.51.100.4", HTTP_X_REAL_IP="203.0.113.10")
    assert list(LoginAttempt.objects.order_by("id").values_list("ip", flat=True)) == [
        "203.0.113.9",
        "127.0.0.1",
        "198.51.100.4",
    ]


def test_failures_from_one_address_do_not_lock_the_user_out_elsewhere(client, cast):
    for _ in range(6):
        log_in(client, "carol", REMOTE_ADDR="203.0.113.66")
    assert log_in(client, "carol", PASSWORD, REMOTE_ADDR="203.0.113.66").status_code == 429

    response = log_in(Client(), "carol", PASSWORD, REMOTE_ADDR="198.51.100.2")

    assert response.status_code == 302


def test_the_lock_lifts_when_the_window_passes(client, cast):
    for _ in range(5):
        log_in(client, "carol")
    assert log_in(client, "carol", PASSWORD).status_code == 429
    LoginAttempt.objects.update(at=timezone.now() - timedelta(seconds=901))

    response = log_in(client, "carol", PASSWORD)

    assert response.status_code == 302
    assert is_logged_in(client)
    assert not LoginAttempt.objects.exists(), "old attempts are pruned"


def test_a_missing_password_is_not_counted(client, cast):
    for _ in range(6):
        response = log_in(client, "carol", "")
        assert response.status_code == 200
    assert not LoginAttempt.objects.exists()
    assert CountingBackend.calls == 0


def test_reaching_the_limit_is_audited_once_and_each_refusal_logged(client, cast, caplog):
    caplog.set_level(logging.WARNING, logger="portal.auth")
    for _ in range(5):
        log_in(client, "carol", REMOTE_ADDR="192.0.2.1")
    for _ in range(3):
        log_in(client, "carol", REMOTE_ADDR="192.0.2.1")

    lockout = LoginLockout.objects.get()
    assert (lockout.username, lockout.ip, lockout.keys) == ("carol", "192.0.2.1", ["username"])
    assert not AuditEvent.objects.exists()
    refusals = [r for r in caplog.records if "login refused for carol" in r.getMessage()]
    assert len(refusals) == 3


def test_the_admin_login_is_the_throttled_one(client, cast):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/admin/"


def test_concurrent_guesses_check_no_more_passwords_than_the_limit(transactional_db, cast):
    """Twelve guesses at once, each on its own database connection (as from several
    gunicorn processes): at most five passwords are checked, the rest get 429."""
    statuses = []
    start = threading.Barrier(12, timeout=30)

    def guess(number):
        try:
            start.wait()
            statuses.append(log_in(Client(), "carol", f"guess {number}").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    assert statuses.count(200) <= 5
    assert statuses.count(200) + statuses.count(429) == 12
    assert LoginAttempt.objects.filter(username="carol").count() == statuses.count(200)
    assert CountingBackend.calls == statuses.count(200)
