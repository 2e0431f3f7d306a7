"""`POST /api/laptops/report/`: Inventario's form, JSON batches, and who may post."""

import base64
import json
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from portal import roles
from portal.services import api_token_create
from schools.models import Laptop, LaptopDay, LaptopVersionChange, SchoolServer

from ..factories import PASSWORD, make_user

URL = "/api/laptops/report/"
VHASH = "a" * 64
OTHER = "b" * 64


@pytest.fixture
def reporter(db):
    return make_user("oatslite", roles.REPORTERS)


def basic(username="oatslite", password=PASSWORD):
    pair = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {pair}"}


def form(**fields):
    values = {
        "laptop": "SHC20000001",
        "connected_at": "2026-11-28T21:52:31.822307",
        "ip_address": "10.0.0.1",
        "free_space": "123456",
        "stolen": "false",
        "vhash": VHASH,
    }
    return urlencode({**values, **fields})


def item(**fields):
    values = {
        "laptop": "SHC20000001",
        "connected_at": "2026-11-28T21:52:31",
        "ip_address": "10.0.0.1",
        "free_space": 1000,
        "stolen": False,
        "vhash": VHASH,
    }
    return {**values, **fields}


def post_form(body, auth=None):
    return Client().post(
        URL, body, content_type="application/x-www-form-urlencoded", **(auth or basic())
    )


def post_json(items, auth=None):
    return Client().post(
        URL, json.dumps(items), content_type="application/json", **(auth or basic())
    )


def stored():
    return (
        list(Laptop.objects.order_by("serial").values_list("serial", "vhash", "last_seen_at")),
        LaptopVersionChange.objects.count(),
        list(LaptopDay.objects.values_list("day", "vhash", "server_key", "laptops", "reports")),
    )


def test_it_takes_inventarios_form(reporter):
    server = SchoolServer.objects.create(hostname="xs-1.local", school="E1", address="10.0.0.1")

    response = post_form(form())

    assert response.status_code == 200, response.content
    assert response.json() == {"ok": True, "received": 1, "stored": 1, "repeats": 0}
    laptop = Laptop.objects.get()
    assert laptop.serial == "SHC20000001"
    assert laptop.last_seen_at == datetime(2026, 11, 28, 21, 52, 31, 822307, tzinfo=UTC)
    assert (laptop.vhash, laptop.server, laptop.address) == (VHASH, server, "10.0.0.1")
    assert (laptop.free_space_kib, laptop.stolen) == (123456, False)
    assert laptop.received_at > laptop.last_seen_at  # ours, kept beside theirs


def test_it_takes_a_json_batch(reporter):
    items = [item(laptop=f"SHC2000000{n}", stolen=n == 2) for n in range(5)]

    response = post_json(items)

    assert response.status_code == 200, response.content
    assert response.json()["stored"] == 5
    assert Laptop.objects.count() == 5
    assert list(Laptop.objects.filter(stolen=True).values_list("serial", flat=True)) == [
        "SHC20000002"
    ]


def test_a_repeat_is_answered_200_and_changes_nothing(reporter):
    post_form(form())
    before = stored()

    response = post_form(form(free_space="1"))

    assert response.status_code == 200
    assert response.json()["repeats"] == 1
    assert stored() == before
    assert Laptop.objects.get().free_space_kib == 123456


FORM_ERRORS = [
    (form(laptop=""), "laptop is required"),
    ("connected_at=2026-11-28T21:52:31", "laptop is required"),
    (form(laptop="SHC 1"), "laptop must be the laptop's serial number"),
    (form(connected_at="yesterday"), "connected_at 'yesterday' is not an ISO 8601 time"),
    (form(connected_at="2099-01-01T00:00:00"), "is in the future"),
    (form(ip_address="10.0.0.300"), "ip_address '10.0.0.300' is not an IPv4 or IPv6 address"),
    (form(free_space="-1"), "free_space must be a whole number of KiB"),
    (form(stolen="maybe"), "stolen must be true or false"),
    (form(vhash="A" * 64), "vhash must be 64 lowercase hexadecimal digits"),
    (form(vhash="a" * 63), "vhash must be 64 lowercase hexadecimal digits"),
    (form() + "&serial=1", "unknown fields: serial"),
    (form() + "&laptop=SHC2", "laptop is given twice"),
    ("laptop=%ZZ&&", "the body is not a URL-encoded form"),
]


@pytest.mark.parametrize(("body", "message"), FORM_ERRORS)
def test_a_bad_form_is_refused_with_what_is_wrong_and_nothing_stored(reporter, body, message):
    response = post_form(body)

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert stored() == ([], 0, [])


JSON_ERRORS = [
    (item(), "the body must be a JSON list of reports"),
    ([], "the list of reports is empty"),
    ([item(), 3], "item 1: a report must be a JSON object"),
    ([item(), item(laptop="SHC2", free_space="12")], "item 1: free_space must be a whole number"),
    ([item(), item(laptop="SHC2", stolen="yes please")], "item 1: stolen must be true or false"),
    ([item(laptop="SHC2", connected_at=None)], "item 0: connected_at is required"),
    ([item(), item(), item(vhash=7)], "item 2: vhash must be 64 lowercase hexadecimal"),
    ([item()] * 1001, "more than 1000 reports"),
]


@pytest.mark.parametrize(("body", "message"), JSON_ERRORS)
def test_a_bad_batch_is_refused_whole_with_the_item_named(reporter, body, message):
    response = post_json(body)

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert stored() == ([], 0, [])


def test_a_body_that_is_not_json_is_refused(reporter):
    response = Client().post(URL, b"[{", content_type="application/json", **basic())
    assert response.status_code == 400
    assert "the body is not JSON" in response.json()["error"]


def test_a_field_given_twice_in_a_batch_is_refused_as_in_the_form(reporter):
    good = json.dumps(item())
    twice = good[:-1] + ', "laptop": "SHC99999999"}'
    response = Client().post(URL, f"[{good}, {twice}]", content_type="application/json", **basic())
    assert response.status_code == 400
    assert "'laptop' is given twice" in response.json()["error"]
    assert stored() == ([], 0, [])


def test_another_content_type_is_refused_with_415(reporter):
    response = Client().post(URL, b"laptop,x", content_type="text/csv", **basic())
    assert response.status_code == 415


def test_a_body_over_the_limit_is_refused_with_413(reporter):
    response = post_form(form(laptop="S" * 5000))
    assert response.status_code == 413
    assert stored() == ([], 0, [])


def _statements(items) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert post_json(items).status_code == 200
    return len(queries)


def test_a_batch_of_500_costs_as_many_queries_as_a_batch_of_5(reporter):
    post_form(form())  # the password is checked once, then remembered

    small = _statements([item(laptop=f"SHC{n}") for n in range(5)])
    big = _statements([item(laptop=f"SHC{n}", connected_at="2026-11-29") for n in range(500)])

    assert small == big


# --- Who may post ----------------------------------------------------------------------------


def test_a_reporter_may_post_with_http_basic(reporter):
    assert post_form(form(), basic()).status_code == 200


@pytest.mark.parametrize("scheme", ["Token", "Bearer"])
def test_a_reporter_may_post_with_its_api_token(reporter, scheme):
    _token, key = api_token_create(user=reporter, name="relay")
    assert post_form(form(), {"HTTP_AUTHORIZATION": f"{scheme} {key}"}).status_code == 200


@pytest.mark.parametrize("actor", ["alice", "carol", "dave", "eve"])
def test_other_roles_are_refused_with_403(cast, actor):
    _token, key = api_token_create(user=getattr(cast, actor), name="x")

    by_password = post_form(form(), basic(actor))
    by_token = post_form(form(), {"HTTP_AUTHORIZATION": f"Token {key}"})

    assert (by_password.status_code, by_token.status_code) == (403, 403)
    assert stored() == ([], 0, [])


def test_a_wrong_password_is_refused_with_401(reporter):
    response = post_form(form(), basic(password="wrong"))

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")
    assert stored() == ([], 0, [])


def test_a_wrong_token_is_refused_with_401(reporter):
    assert post_form(form(), {"HTTP_AUTHORIZATION": "Token nope"}).status_code == 401


def test_anonymous_is_refused_with_401(reporter):
    response = Client().post(URL, form(), content_type="application/x-www-form-urlencoded")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")


def test_a_session_is_not_enough(reporter):
    client = Client()
    client.force_login(reporter)
    response = client.post(URL, form(), content_type="application/x-www-form-urlencoded")
    assert response.status_code == 401


def test_a_new_password_stops_the_remembered_one_at_once(reporter):
    assert post_form(form(), basic()).status_code == 200
    reporter.set_password("another one")
    reporter.save(update_fields=["password"])

    assert post_form(form(connected_at="2026-11-29T00:00:00"), basic()).status_code == 401


def test_a_deactivated_account_is_refused_at_once(reporter):
    assert post_form(form(), basic()).status_code == 200
    reporter.is_active = False
    reporter.save(update_fields=["is_active"])

    assert post_form(form(connected_at="2026-11-29T00:00:00"), basic()).status_code == 401


def test_repeated_wrong_passwords_are_throttled(reporter, settings):
    settings.LOGIN_FAILURE_LIMIT = 2
    for _attempt in range(2):
        assert post_form(form(), basic(password="wrong")).status_code == 401

    response = post_form(form(), basic())

    assert response.status_code == 429
    assert "Retry-After" in response
