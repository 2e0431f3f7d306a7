"""The build list, the build page, its polled status partial, the contents-hash form and the
retry action."""

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from releases import services
from releases.models import AuditEvent, Build, BuildStatus, HashSource

from ..factories import stage, write_build

POLL = 'hx-trigger="every 1s"'


@pytest.fixture
def upload(cast, tmp_path):
    """A build uploaded by alice, then put in `status` for the test."""

    def _upload(name="py801-2", *, status=BuildStatus.UPLOADED):
        paths = write_build(tmp_path / "in" / name, name)
        staged = [stage(path, settings.UPLOAD_TEMP_DIR) for path in paths]
        build = services.build_create(
            acting_user=cast.alice, tarball=staged[0], md5_file=staged[1], contents=staged[2]
        )
        Build.objects.filter(pk=build.pk).update(status=status)
        build.refresh_from_db()
        return build

    return _upload


@pytest.fixture
def as_user(cast):
    """A client logged in as one of the cast, reading English."""

    def _as_user(who):
        client = Client()
        client.force_login(getattr(cast, who))
        client.cookies["django_language"] = "en"
        return client

    return _as_user


def page_urls(name):
    return {
        "list": reverse("releases:build_list"),
        "detail": reverse("releases:build_detail", args=[name]),
        "status": reverse("releases:build_status", args=[name]),
    }


def hash_url(build):
    return reverse("releases:build_contents_hash", args=[build.name])


def retry_url(build):
    return reverse("releases:build_retry", args=[build.name])


def shown_messages(response):
    return [str(message) for message in response.context["messages"]]


# --- Access ----------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["list", "detail", "status", "contents_hash", "retry"])
def test_it_sends_anonymous_visitors_to_the_login_page(client, upload, page):
    build = upload(status=BuildStatus.PUBLISH_FAILED)
    if page in ("contents_hash", "retry"):
        url = reverse(f"releases:build_{page}", args=[build.name])
        response = client.post(url, {"contents_hash": "abcdef0123456789"})
    else:
        url = page_urls(build.name)[page]
        response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    build.refresh_from_db()
    assert (build.status, build.contents_hash) == (BuildStatus.PUBLISH_FAILED, "")


@pytest.mark.parametrize("who", ["alice", "carol", "dave", "eve"])
@pytest.mark.parametrize("page", ["list", "detail", "status"])
def test_it_shows_the_read_pages_to_every_logged_in_user(as_user, upload, who, page):
    build = upload()
    response = as_user(who).get(page_urls(build.name)[page])
    assert response.status_code == 200
    assert build.name in response.content.decode()


def test_it_answers_404_for_a_build_that_does_not_exist(as_user, cast):
    response = as_user("eve").get(reverse("releases:build_detail", args=["py999"]))
    assert response.status_code == 404


@pytest.mark.parametrize("who", ["dave", "eve"])
def test_it_refuses_the_hash_form_to_people_who_may_not_edit(as_user, upload, who):
    build = upload()
    response = as_user(who).post(hash_url(build), {"contents_hash": "abcdef0123456789"})
    assert response.status_code == 403
    build.refresh_from_db()
    assert build.contents_hash == ""
    assert not build.events.filter(action="contents_hash").exists()


@pytest.mark.parametrize("who", ["dave", "eve"])
def test_it_refuses_a_retry_to_people_who_may_not_edit(as_user, upload, who):
    build = upload(status=BuildStatus.PUBLISH_FAILED)
    response = as_user(who).post(retry_url(build))
    assert response.status_code == 403
    build.refresh_from_db()
    assert build.status == BuildStatus.PUBLISH_FAILED


@pytest.mark.parametrize("who", ["dave", "eve"])
def test_it_hides_the_hash_form_and_retry_button_from_people_who_may_not_edit(as_user, upload, who):
    build = upload(status=BuildStatus.PUBLISH_FAILED)
    page = as_user(who).get(page_urls(build.name)["detail"]).content.decode()
    assert hash_url(build) not in page
    assert retry_url(build) not in page


@pytest.mark.parametrize("url", [hash_url, retry_url], ids=["contents_hash", "retry"])
def test_it_answers_405_to_a_get_on_an_action(as_user, upload, url):
    response = as_user("alice").get(url(upload()))
    assert response.status_code == 405


# --- Polling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [BuildStatus.UPLOADED, BuildStatus.VALIDATING, BuildStatus.VALID, BuildStatus.PUBLISHING],
)
def test_it_polls_the_status_while_the_build_is_being_worked_on(as_user, upload, status):
    build = upload(status=status)
    client = as_user("dave")
    for page in ("detail", "status"):
        html = client.get(page_urls(build.name)[page]).content.decode()
        assert f'hx-get="{page_urls(build.name)["status"]}"' in html, page
        assert POLL in html, page


@pytest.mark.parametrize(
    "status", [BuildStatus.PUBLISHED, BuildStatus.INVALID, BuildStatus.PUBLISH_FAILED]
)
def test_it_stops_polling_once_the_build_is_done(as_user, upload, status):
    build = upload(status=status)
    client = as_user("dave")
    for page in ("detail", "status"):
        html = client.get(page_urls(build.name)[page]).content.decode()
        assert "hx-get" not in html, page
        assert POLL not in html, page


def test_it_answers_the_poll_with_the_partial_alone(as_user, upload):
    build = upload(status=BuildStatus.VALIDATING)
    response = as_user("dave").get(page_urls(build.name)["status"], HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="build-status"')
    assert "<html" not in html


# --- Contents hash ---------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_it_saves_a_contents_hash_and_audits_who_set_it(as_user, upload, cast, who):
    build = upload(status=BuildStatus.PUBLISHED)
    response = as_user(who).post(
        hash_url(build), {"contents_hash": " abcdef0123456789 "}, follow=True
    )
    assert response.redirect_chain == [(page_urls(build.name)["detail"], 302)]
    assert "Contents hash saved." in shown_messages(response)
    build.refresh_from_db()
    assert build.contents_hash == "abcdef0123456789"
    assert build.contents_hash_source == HashSource.ENTERED
    event = build.events.get(action="contents_hash")
    assert event.actor == getattr(cast, who)
    assert event.params == {"value": "abcdef0123456789"}
    assert "Contents hash set to abcdef0123456789." in response.content.decode()


@pytest.mark.parametrize(
    "value",
    [
        "short",
        "has spaces inside",
        "<script>alert(1)</script>",
        "x" * 129,
    ],
)
def test_it_refuses_a_malformed_contents_hash_and_changes_nothing(as_user, upload, value):
    build = upload(status=BuildStatus.PUBLISHED)
    response = as_user("alice").post(hash_url(build), {"contents_hash": value}, follow=True)
    assert response.status_code == 200
    [message] = shown_messages(response)
    assert "is not a contents hash" in message
    build.refresh_from_db()
    assert (build.contents_hash, build.entered_contents_hash) == ("", "")
    assert not build.events.filter(action="contents_hash").exists()


def test_it_asks_for_a_hash_when_the_field_is_empty(as_user, upload):
    build = upload()
    response = as_user("alice").post(hash_url(build), {"contents_hash": ""}, follow=True)
    assert shown_messages(response) == ["Enter a contents hash."]
    build.refresh_from_db()
    assert build.contents_hash == ""


# --- Retry -----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_it_queues_a_failed_publication_again(
    as_user, upload, cast, who, django_capture_on_commit_callbacks
):
    build = upload(status=BuildStatus.PUBLISH_FAILED)
    with django_capture_on_commit_callbacks() as queued:
        response = as_user(who).post(retry_url(build), follow=True)
    assert "Publication queued again." in shown_messages(response)
    build.refresh_from_db()
    assert build.status == BuildStatus.VALID
    event = build.events.get(code="retry")
    assert (event.actor, event.from_status, event.to_status) == (
        getattr(cast, who),
        BuildStatus.PUBLISH_FAILED,
        BuildStatus.VALID,
    )
    # The publication task is sent once the change is committed.
    assert len(queued) == 1


@pytest.mark.parametrize(
    "status",
    [BuildStatus.UPLOADED, BuildStatus.VALID, BuildStatus.INVALID, BuildStatus.PUBLISHED],
)
def test_it_retries_only_a_build_whose_publication_failed(
    as_user, upload, status, django_capture_on_commit_callbacks
):
    build = upload(status=status)
    with django_capture_on_commit_callbacks() as queued:
        response = as_user("alice").post(retry_url(build), follow=True)
    assert shown_messages(response) == ["Only a build whose publication failed can be retried."]
    build.refresh_from_db()
    assert build.status == status
    assert not build.events.filter(code="retry").exists()
    assert queued == []


def test_it_offers_the_retry_button_only_after_a_failed_publication(as_user, upload):
    failed = upload("py801-2", status=BuildStatus.PUBLISH_FAILED)
    published = upload("py801-3", status=BuildStatus.PUBLISHED)
    client = as_user("carol")
    failed_page = client.get(page_urls(failed.name)["detail"]).content.decode()
    published_page = client.get(page_urls(published.name)["detail"]).content.decode()
    assert retry_url(failed) in failed_page
    assert retry_url(published) not in published_page


# --- Language --------------------------------------------------------------------------------


def test_it_shows_the_audit_trail_in_spanish_by_default(client, upload, cast):
    build = upload()
    client.force_login(cast.dave)
    html = client.get(page_urls(build.name)["detail"]).content.decode()
    assert "Historial" in html
    assert f"Se subió py801-2-tree.tar.bz2 ({build.size} bytes) mediante web." in html


def test_it_shows_the_audit_trail_in_english_when_chosen(as_user, upload):
    build = upload()
    html = as_user("dave").get(page_urls(build.name)["detail"]).content.decode()
    assert "History" in html
    assert f"Uploaded py801-2-tree.tar.bz2 ({build.size} bytes) through web." in html


# --- Queries ---------------------------------------------------------------------------------


@pytest.fixture
def busy(upload, cast):
    """30 builds, each with 5 audit events by different people (and the worker)."""
    builds = [upload(f"py801-{number}") for number in range(30)]
    actors = [cast.bob, cast.carol, cast.root, None]
    AuditEvent.objects.bulk_create(
        AuditEvent(build=build, actor=actor, action="note", code="md5_bare")
        for build in builds
        for actor in actors
    )
    return builds


def test_it_lists_many_builds_in_a_few_queries(as_user, busy, django_assert_max_num_queries):
    client = as_user("dave")
    with django_assert_max_num_queries(6):
        response = client.get(reverse("releases:build_list"))
    assert response.content.decode().count('class="status status-') == 30


def test_it_shows_a_build_page_with_its_history_in_a_few_queries(
    as_user, busy, django_assert_max_num_queries
):
    client = as_user("alice")
    build = busy[0]
    with django_assert_max_num_queries(6):
        response = client.get(page_urls(build.name)["detail"])
    assert response.content.decode().count("<time ") == 5


# --- Messages the live status overtakes -----------------------------------------------------


@pytest.mark.parametrize(("then", "shown"), [(None, True), (BuildStatus.PUBLISHED, False)])
def test_a_message_about_work_goes_once_the_work_is_done(as_user, upload, then, shown):
    build = upload(status=BuildStatus.PUBLISH_FAILED)
    client = as_user("alice")
    client.post(retry_url(build))
    if then:  # a fast worker finished before the page was shown
        Build.objects.filter(pk=build.pk).update(status=then)
    html = client.get(page_urls(build.name)["detail"]).content.decode()
    assert ("Publication queued again." in html) is shown
    assert '<ul class="messages" id="live-messages">' in html


@pytest.mark.parametrize(
    ("status", "cleared"), [(BuildStatus.VALIDATING, False), (BuildStatus.INVALID, True)]
)
def test_the_poll_clears_the_live_messages_when_the_work_ends(as_user, upload, status, cleared):
    build = upload(status=status)
    response = as_user("dave").get(page_urls(build.name)["status"], HTTP_HX_REQUEST="true")
    oob = '<ul class="messages" id="live-messages" hx-swap-oob="true"></ul>'
    assert (oob in response.content.decode()) is cleared
