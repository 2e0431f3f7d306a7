import pytest
from django.urls import reverse

from releases import deploy, offers
from releases.models import Build, BuildStatus, Deployment, DeploymentStatus, OfferedEntry
from releases.reasons import Refused, render

from ..factories import PASSWORD


def deployment_url(deployment):
    return reverse("releases:deployment_detail", args=[deployment.pk])


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def build(published):
    return published("py300-1")


def test_the_promotion_page_shows_the_exact_diff_and_unknown_coverage(client, cast, build):
    response = login(client, cast.carol).get(reverse("releases:build_promote", args=[build.name]))
    assert response.status_code == 200
    body = response.content.decode()
    assert f"+[{build.contents_hash}]" in body
    assert "+name = py300-1" in body
    assert 'id="coverage-unknown"' in body


@pytest.mark.parametrize("who", ["alice", "dave", "eve"])
def test_only_approvers_see_the_promotion_page(client, cast, build, who):
    response = login(client, getattr(cast, who)).get(
        reverse("releases:build_promote", args=[build.name])
    )
    assert response.status_code == 403


def test_anonymous_visitors_are_sent_to_log_in(client, build):
    response = client.get(reverse("releases:build_promote", args=[build.name]))
    assert response.status_code == 302


def test_the_uploader_sees_why_they_cannot_promote(client, cast, published):
    build = published(uploader=cast.root)
    response = login(client, cast.root).get(reverse("releases:build_promote", args=[build.name]))
    assert "four-eyes" in response.content.decode() or "cuatro ojos" in response.content.decode()
    assert 'id="confirm-promotion"' not in response.content.decode()


def test_confirming_promotes_and_shows_the_deployment(client, cast, build):
    response = login(client, cast.carol).post(
        reverse("releases:build_promote", args=[build.name]),
        {"priority": "normal", "reason": "field test in two schools"},
    )
    deployment = Deployment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("releases:deployment_detail", args=[deployment.pk])
    build.refresh_from_db()
    assert build.status == BuildStatus.OFFERED


def test_confirming_without_a_reason_explains_the_coverage_gate(client, cast, build):
    response = login(client, cast.carol).post(
        reverse("releases:build_promote", args=[build.name]), {"priority": "normal"}
    )
    assert response.status_code == 400
    assert not OfferedEntry.objects.exists()
    assert Build.objects.get(pk=build.pk).status == BuildStatus.PUBLISHED


def test_withdrawing_from_the_build_page(client, cast, build):
    offers.build_promote(build=build, acting_user=cast.carol, reason="x")
    deploy.apply_deployments()
    response = login(client, cast.carol).post(
        reverse("releases:build_withdraw", args=[build.name]), {"reason": "breaks wifi"}
    )
    assert response.status_code == 302
    build.refresh_from_db()
    assert build.status == BuildStatus.WITHDRAWN
    assert build.status_detail == render("withdrawn_because", {"reason": "breaks wifi"})
    assert Deployment.objects.get(action="withdraw").reason == "breaks wifi"


def test_withdrawing_without_a_reason_is_refused_and_changes_nothing(client, cast, build):
    offers.build_promote(build=build, acting_user=cast.carol, reason="x")
    deploy.apply_deployments()
    response = login(client, cast.carol).post(
        reverse("releases:build_withdraw", args=[build.name]), {"reason": "  "}, follow=True
    )
    assert render("reason_required") in response.content.decode()
    assert Build.objects.get(pk=build.pk).status == BuildStatus.OFFERED
    assert not Deployment.objects.filter(action="withdraw").exists()


@pytest.mark.parametrize("who", ["alice", "dave", "eve"])
def test_only_approvers_withdraw(client, cast, build, who):
    offers.build_promote(build=build, acting_user=cast.carol, reason="x")
    response = login(client, getattr(cast, who)).post(
        reverse("releases:build_withdraw", args=[build.name])
    )
    assert response.status_code == 403


def test_everyone_logged_in_sees_the_deployments(client, cast, build):
    offers.build_promote(build=build, acting_user=cast.carol, reason="x")
    deployment = deploy.apply_deployments()
    for who in (cast.alice, cast.dave, cast.eve):
        login(client, who)
        assert client.get(reverse("releases:deployment_list")).status_code == 200
        detail = client.get(reverse("releases:deployment_detail", args=[deployment.pk]))
        assert build.contents_hash in detail.content.decode()


def test_the_emergency_stop_needs_a_reason(client, cast, build):
    offers.build_promote(build=build, acting_user=cast.carol, reason="x")
    login(client, cast.carol).post(reverse("releases:offers_stop_all"), {"reason": ""})
    assert OfferedEntry.objects.filter(active=True).exists()
    client.post(reverse("releases:offers_stop_all"), {"reason": "laptops fail to boot"})
    assert not OfferedEntry.objects.filter(active=True).exists()


def test_a_coordinator_cannot_stop_everything(client, cast, build):
    offers.build_promote(build=build, acting_user=cast.carol, reason="x")
    response = login(client, cast.dave).post(reverse("releases:offers_stop_all"), {"reason": "no"})
    assert response.status_code == 403
    assert OfferedEntry.objects.filter(active=True).exists()


def test_an_approver_imports_hand_edits_after_drift(client, cast, build, oatslite):
    offers.build_promote(build=build, acting_user=cast.carol, reason="x")
    deploy.apply_deployments()
    oatslite.write_text(oatslite.read_text() + "\n[handmade1]\nname = x\n")
    offers.build_withdraw(build=build, acting_user=cast.carol)
    assert deploy.apply_deployments().status == DeploymentStatus.DRIFT
    page = login(client, cast.carol).get(reverse("releases:deployment_list"))
    assert 'id="drift"' in page.content.decode()
    client.post(reverse("releases:drift_resolve"), {"choice": "import"})
    assert OfferedEntry.objects.active().filter(section="handmade1").exists()
    # The approver's withdrawal, which never reached the file, is kept over the hand edits
    # (issue 11: it used to be dropped without a word) and deployed next.
    assert not OfferedEntry.objects.active().filter(build=build).exists()
    assert deploy.apply_deployments().status == DeploymentStatus.SUCCEEDED
    assert deploy.render_current() == oatslite.read_text()
    assert "[handmade1]" in oatslite.read_text() and build.name not in oatslite.read_text()


def test_rolling_back_from_the_deployment_page(client, cast, build):
    offers.build_promote(build=build, acting_user=cast.carol, reason="x")
    first = deploy.apply_deployments()
    offers.build_withdraw(build=build, acting_user=cast.carol)
    second = deploy.apply_deployments()
    client = login(client, cast.carol)
    # The one on disk offers no way back to itself; the earlier one asks for a reason.
    assert 'id="on-disk"' in client.get(deployment_url(second)).content.decode()
    page = client.get(deployment_url(first)).content.decode()
    assert 'id="rollback-reason"' in page and 'id="on-disk"' not in page
    refused = client.post(reverse("releases:deployment_rollback", args=[first.pk]), follow=True)
    assert render("reason_required") in refused.content.decode()
    assert not Deployment.objects.filter(action="rollback").exists()

    response = client.post(
        reverse("releases:deployment_rollback", args=[first.pk]), {"reason": "wifi fixed"}
    )
    assert response.status_code == 302
    rollback = Deployment.objects.get(action="rollback")
    assert rollback.reason == "wifi fixed"
    assert rollback.entry_changes == {"added": [build.name], "removed": []}
    assert deploy.apply_deployments().content == first.content
    page = client.get(deployment_url(rollback)).content.decode()
    assert f'<dd id="deployment-added">{build.name}</dd>' in page


def test_rolling_back_to_the_file_on_disk_is_refused(cast, build):
    offers.build_promote(build=build, acting_user=cast.carol, reason="x")
    on_disk = deploy.apply_deployments()
    with pytest.raises(Refused) as caught:
        offers.deployment_rollback(deployment=on_disk, acting_user=cast.carol, reason="x")
    assert caught.value.code == "rollback_on_disk"


# --- What blocks a promotion is said before anyone tries ---------------------------------


def without_hash(build):
    Build.objects.filter(pk=build.pk).update(contents_hash="", contents_hash_source="")
    build.refresh_from_db()
    return build


@pytest.mark.parametrize("case", ["no hash", "own build"])
def test_the_build_page_shows_promote_disabled_with_the_reason(client, cast, published, case):
    build = without_hash(published()) if case == "no hash" else published(uploader=cast.root)
    user = cast.carol if case == "no hash" else cast.root
    body = login(client, user).get(reverse("releases:build_detail", args=[build.name]))
    body = body.content.decode()
    assert 'id="promote-link"' not in body
    assert 'id="promote-blocked" disabled' in body
    code = "promote_no_hash" if case == "no hash" else "promote_own_build"
    why = Refused(code).message
    assert f'<span class="help" id="promote-blocked-why">{why}</span>' in body


def test_the_promote_page_of_a_build_without_a_hash_says_so_and_shows_no_parser_error(
    client, cast, published
):
    build = without_hash(published())
    response = login(client, cast.carol).get(reverse("releases:build_promote", args=[build.name]))
    body = response.content.decode()
    assert response.status_code == 200
    assert Refused("promote_no_hash").message in body
    assert "section header" not in body and 'id="promote-diff"' not in body
    assert 'id="confirm-promotion"' not in body


def test_an_approver_sees_an_enabled_promote_link_for_a_promotable_build(client, cast, build):
    body = login(client, cast.carol).get(reverse("releases:build_detail", args=[build.name]))
    assert 'id="promote-link"' in body.content.decode()
    assert 'id="promote-blocked"' not in body.content.decode()


def test_a_promotion_stopped_by_a_hand_edit_says_it_is_waiting(client, cast, build, oatslite):
    offers.build_promote(build=build, acting_user=cast.carol, reason="x")
    page = login(client, cast.carol).get(reverse("releases:build_detail", args=[build.name]))
    assert Refused("offer_waiting_deploy").message in page.content.decode()
    deploy.apply_deployments()
    page = client.get(reverse("releases:build_detail", args=[build.name]))
    assert 'id="offer-waiting"' not in page.content.decode()

    oatslite.write_text(oatslite.read_text() + "\n[handmade1]\nname = x\n")
    offers.build_withdraw(build=build, acting_user=cast.carol)
    offers.build_promote(build=build, acting_user=cast.carol, reason="again")
    assert deploy.apply_deployments().status == DeploymentStatus.DRIFT
    waiting = Refused("offer_waiting_drift").message
    page = client.get(reverse("releases:build_detail", args=[build.name]))
    assert waiting in page.content.decode()
    listing = client.get(reverse("releases:deployment_list")).content.decode()
    assert waiting in listing and 'class="waiting"' in listing
