import pytest
from django.core.management import CommandError, call_command
from django.utils import translation

from releases import deploy, offers
from releases.models import BuildStatus, DeploymentStatus, OfferedEntry
from releases.reasons import render

from ..factories import make_user

HAND_WRITTEN = "# kept\n[0badc0de]\nname = py700-1\npriority = normal\n"


def test_render_prints_what_the_database_implies_and_writes_nothing(
    cast, published, capsys, oatslite
):
    build = published()
    offers.build_promote(build=build, acting_user=cast.carol, reason="x")
    call_command("render_updates_cfg")
    assert capsys.readouterr().out == deploy.render_current()
    assert not oatslite.exists()


def test_import_adopts_a_hand_written_file(db, tmp_path, capsys):
    path = tmp_path / "updates.cfg"
    path.write_text(HAND_WRITTEN)
    call_command("import_updates_cfg", str(path))
    assert "Imported 1 entries" in capsys.readouterr().out
    assert deploy.render_current() == HAND_WRITTEN


def test_import_refuses_a_file_oatslite_could_not_read(db, tmp_path):
    path = tmp_path / "updates.cfg"
    path.write_text("[a]\nname = x\n[a]\nname = y\n")
    with pytest.raises(CommandError, match=r"not a valid updates\.cfg"):
        call_command("import_updates_cfg", str(path))
    assert not OfferedEntry.objects.exists()


def test_import_explains_a_missing_file(db, tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_updates_cfg", str(tmp_path / "nope.cfg"))


def test_promote_follows_the_same_rules_as_the_web(cast, published):
    build = published(uploader=make_user("uma", "uploaders", "approvers"))
    with pytest.raises(CommandError, match=r"four-eyes|cuatro ojos"):
        call_command("promote", build.name, "--by", "uma", "--reason", "x")
    with pytest.raises(CommandError):
        call_command("promote", build.name, "--by", "dave", "--reason", "x")
    assert not OfferedEntry.objects.exists()


@pytest.mark.parametrize("command", ["promote", "withdraw"])
@pytest.mark.parametrize("who", ["alice", "dave", "eve"])
def test_only_approvers_promote_or_withdraw(published, cast, who, command):
    """Commands authorise `--by` as views authorise the request (services assume it)."""
    build = published(uploader=cast.bob)
    with pytest.raises(CommandError) as caught:
        call_command(command, build.name, "--by", who, "--reason", "x")
    with translation.override("en"):
        assert str(caught.value) == render("promote_not_approver")
    build.refresh_from_db()
    assert build.status == "published" and not OfferedEntry.objects.exists()


def test_promote_and_withdraw_queue_deployments(cast, published, capsys):
    build = published()
    call_command("promote", build.name, "--by", "carol", "--reason", "pilot")
    assert "promoted" in capsys.readouterr().out
    deploy.apply_deployments()
    call_command("withdraw", build.name, "--by", "carol", "--reason", "pilot over")
    assert deploy.apply_deployments().status == DeploymentStatus.SUCCEEDED
    build.refresh_from_db()
    assert build.status == BuildStatus.WITHDRAWN


def test_promote_names_an_unknown_build_or_user(cast, published):
    with pytest.raises(CommandError, match="No build"):
        call_command("promote", "nope", "--by", "carol")
    with pytest.raises(CommandError, match="No active user"):
        call_command("promote", published().name, "--by", "nobody")


def test_promote_wait_gives_up_after_the_timeout_without_a_worker(cast, published):
    with pytest.raises(CommandError, match="Gave up waiting"):
        call_command(
            "promote",
            published().name,
            "--by",
            "carol",
            "--reason",
            "x",
            "--wait",
            "--timeout",
            "1",
        )


@pytest.mark.worker
def test_promote_wait_exits_non_zero_when_the_restart_fails(
    cast, published, start_worker, tmp_path, settings, capsys
):
    cfg = tmp_path / "cfg" / "updates.cfg"
    settings.OATSLITE_UPDATES_CFG = cfg
    start_worker(OATSLITE_UPDATES_CFG=str(cfg), OATSLITE_RESTART_COMMAND="false")
    build = published()
    with pytest.raises(SystemExit) as caught:
        call_command("promote", build.name, "--by", "carol", "--reason", "x", "--wait")
    assert caught.value.code == 1
    assert "oatslite" in capsys.readouterr().err
    build.refresh_from_db()
    assert build.status == BuildStatus.PUBLISHED
    assert not cfg.exists()


@pytest.mark.worker
def test_promote_wait_succeeds_with_a_worker(
    cast, published, start_worker, tmp_path, settings, capsys
):
    cfg = tmp_path / "cfg" / "updates.cfg"
    settings.OATSLITE_UPDATES_CFG = cfg
    start_worker(OATSLITE_UPDATES_CFG=str(cfg))
    build = published()
    call_command("promote", build.name, "--by", "carol", "--reason", "x", "--wait")
    assert "restart skipped" in capsys.readouterr().out
    assert build.name in cfg.read_text()
