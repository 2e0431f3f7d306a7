"""What a school server's report says is wrong reaches people as a sentence in their language
that says what happened and what to do: a refresh's exit status explained, a damaged copy
named. The English summary stays for the CSV export and the admin."""

import pytest
from django.test import Client
from django.urls import reverse

from schools.checkin import refresh_problem
from schools.models import SchoolServer

from .test_checkin_record import make_server, record


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, None),
        (0, None),
        (1, ("refresh_failed", {"status": 1})),
        (127, ("refresh_not_run", {"status": 127})),
        (126, ("refresh_not_run", {"status": 126})),
        (137, ("refresh_killed", {"status": 137, "signal": 9})),
        (23, ("refresh_failed_other", {"status": 23})),
        (-1, ("refresh_failed_other", {"status": -1})),
    ],
)
def test_a_refresh_status_is_read_as_the_school_server_reports_it(status, expected):
    assert refresh_problem(status) == expected


def test_a_failed_refresh_and_a_damaged_copy_are_kept_as_codes(db, published):
    build = published("py801-5")
    xs = make_server()

    record(xs, [{"name": build.name, "md5": "0" * 32}], last_refresh_status=1)

    xs.refresh_from_db()
    assert [code for code, _params in xs.problems] == ["refresh_failed", "checkin_md5_differs"]
    assert xs.problems[1][1] == {"build": "py801-5", "md5": "0" * 32, "published": build.md5}
    assert "last refresh exited with status 1" in xs.last_error  # the English summary


def test_a_clean_report_clears_the_problems(db):
    xs = make_server()
    record(xs, [], last_refresh_status=1)
    record(xs, [], last_refresh_status=0)
    xs.refresh_from_db()
    assert (xs.problems, xs.last_error) == ([], "")


def test_the_servers_page_explains_the_problem_in_spanish(cast):
    xs = make_server()
    record(xs, [], last_refresh_status=1)
    client = Client()  # the deployment's language, Spanish
    client.force_login(cast.dave)

    page = client.get(reverse("schools:server_detail", args=[xs.hostname]))
    overview = client.get(reverse("schools:overview"))

    text = page.content.decode()
    assert "xs-refresh-xobuilds" in text and "estado de salida 1" in text
    assert "exited with status" not in text
    assert "estado de salida 1" in overview.content.decode()


def test_a_report_from_before_the_codes_shows_its_english_text(db):
    xs = SchoolServer.objects.create(hostname="xs-old.local", school="E", last_error="old text")
    assert xs.problem_messages == ["old text"]
