"""The home page: what is waiting for the reader's role, each item linking to the page that
resolves it, in a fixed number of queries."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from releases import deploy, offers
from releases.models import Build, BuildStatus
from schools.models import SchoolServer

from ..factories import PASSWORD

HOME = reverse("home")


def home_for(user, **headers):
    client = Client()
    client.force_login(user)
    client.cookies["django_language"] = "en"
    return client.get(HOME, **headers)


def detail(build):
    return reverse("releases:build_detail", args=[build.name])


def test_login_lands_on_it(cast):
    response = Client().post(reverse("login"), {"username": "eve", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == HOME


def test_nothing_waiting_says_so(cast):
    body = home_for(cast.eve).content.decode()
    assert 'id="nothing-waiting"' in body


def test_an_uploader_sees_their_failed_builds_and_those_waiting_for_a_hash(cast, published):
    failed = published(uploader=cast.alice)
    Build.objects.filter(pk=failed.pk).update(
        status=BuildStatus.INVALID, status_code="md5_mismatch"
    )
    no_hash = published(uploader=cast.alice)
    Build.objects.filter(pk=no_hash.pk).update(contents_hash="")
    someone_elses = published(uploader=cast.bob)
    Build.objects.filter(pk=someone_elses.pk).update(status=BuildStatus.INVALID)

    body = home_for(cast.alice).content.decode()
    assert f'href="{detail(failed)}"' in body and 'id="needs-failed"' in body
    assert f'href="{detail(no_hash)}#contents-hash"' in body
    assert f'href="{detail(someone_elses)}"' not in body.split('id="last-events"')[0]


def test_an_approver_sees_builds_waiting_for_promotion_with_their_coverage(cast, published):
    build = published(uploader=cast.alice)
    body = home_for(cast.carol).content.decode()
    section = body.split('id="needs-promotion"')[1].split("</section>")[0]
    assert f'href="{detail(build)}"' in section
    assert "coverage unknown" in section
    assert reverse("schools:build_coverage", args=[build.name]) in section


def test_an_approver_sees_a_deployment_stopped_by_a_hand_edit(cast, published, oatslite):
    offers.build_promote(build=published(), acting_user=cast.carol, reason="x")
    deploy.apply_deployments()
    oatslite.write_text(oatslite.read_text() + "\n[hand]\nname = x\n")
    offers.build_promote(build=published(), acting_user=cast.carol, reason="y")
    stopped = deploy.apply_deployments()
    body = home_for(cast.carol).content.decode()
    assert 'id="needs-deployment"' in body
    assert reverse("releases:deployment_detail", args=[stopped.pk]) in body
    assert 'id="needs-offers"' in body


def test_a_coordinator_sees_silent_and_lost_servers_linked_to_the_filtered_overview(cast):
    now = timezone.now()
    for i, ago in enumerate((timedelta(days=2), timedelta(days=9), timedelta(days=10))):
        SchoolServer.objects.create(
            hostname=f"xs-{i}.local", name=f"s{i}", school=f"School {i}", last_report_at=now - ago
        )
    body = home_for(cast.dave).content.decode()
    assert "1 silent server" in body and "2 lost servers" in body
    assert f"{reverse('schools:overview')}?state=lost" in body
    assert 'id="needs-promotion"' not in body  # not a coordinator's business


@pytest.mark.parametrize("who", ["alice", "carol", "dave"])
def test_it_runs_a_fixed_number_of_queries(cast, published, who, django_assert_max_num_queries):
    for _ in range(12):
        published(uploader=cast.alice)
    with django_assert_max_num_queries(40):
        assert home_for(getattr(cast, who)).status_code == 200
