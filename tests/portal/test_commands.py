"""The operator's management commands: `api_token`, `seed_demo` and `contents_hash`."""

import hashlib
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from portal import roles
from portal.models import ApiToken, hash_token
from schools.models import SchoolServer

ECHO_HASH = ["sh", "-c", "echo abcdef123456", "sh", "{path}"]


def run(*args, **options):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


# --- api_token -------------------------------------------------------------------------------


def test_it_prints_a_key_that_authenticates_its_user(cast):
    key = run("api_token", "alice", "--name", "image builder").strip()
    token = ApiToken.objects.authenticate(key)
    assert token is not None
    assert (token.user, token.name) == (cast.alice, "image builder")


def test_it_prints_nothing_but_the_key_so_scripts_can_capture_it(cast):
    output = run("api_token", "alice")
    assert output.endswith("\n")
    assert len(output.split()) == 1


def test_it_stores_only_the_hash_of_the_key(cast):
    key = run("api_token", "alice").strip()
    token = ApiToken.objects.get()
    assert token.key_hash == hash_token(key)
    assert key not in (token.key_hash, token.prefix, token.name)
    assert token.prefix == key[: len(token.prefix)]


def test_it_refuses_an_unknown_user(db):
    with pytest.raises(CommandError, match="No active user named 'mallory'"):
        run("api_token", "mallory")
    assert not ApiToken.objects.exists()


def test_it_refuses_an_inactive_user(cast):
    cast.alice.is_active = False
    cast.alice.save(update_fields=["is_active"])
    with pytest.raises(CommandError, match="No active user named 'alice'"):
        run("api_token", "alice")
    assert not ApiToken.objects.exists()


# --- seed_demo -------------------------------------------------------------------------------

DEMO = {
    "uploader": ("uploader-demo", {roles.UPLOADERS}),
    "approver": ("approver-demo", {roles.APPROVERS}),
    "coordinator": ("coordinator-demo", {roles.COORDINATORS}),
    "admin": ("admin-demo", set()),
}


def counts():
    User = get_user_model()
    return (
        User.objects.count(),
        User.groups.through.objects.count(),
        SchoolServer.objects.count(),
    )


def test_it_refuses_to_seed_demo_accounts_with_debug_off(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="--force"):
        run("seed_demo")
    assert counts() == (0, 0, 0)


def test_it_seeds_the_demo_users_with_their_roles_when_forced(db, settings):
    settings.DEBUG = False
    run("seed_demo", "--force")
    users = {user.username: user for user in get_user_model().objects.all()}
    assert set(users) == set(DEMO)
    for username, (password, groups) in DEMO.items():
        user = users[username]
        assert user.check_password(password), username
        assert set(user.groups.values_list("name", flat=True)) == groups, username
        assert (user.is_staff, user.is_superuser) == (username == "admin",) * 2, username


def test_it_seeds_the_demo_school_servers(db, settings):
    settings.DEBUG = False
    run("seed_demo", "--force")
    servers = SchoolServer.objects.all()
    assert len(servers) == 6
    assert all(server.active and server.school and server.department for server in servers)
    assert "xs-caacupe-1.local" in {server.hostname for server in servers}


def test_it_changes_nothing_when_seeding_twice(db, settings):
    settings.DEBUG = False
    run("seed_demo", "--force")
    before = counts()
    passwords = dict(get_user_model().objects.values_list("username", "password"))
    run("seed_demo", "--force")
    assert counts() == before
    assert dict(get_user_model().objects.values_list("username", "password")) == passwords


# --- contents_hash ---------------------------------------------------------------------------


@pytest.fixture
def contents_file(tmp_path):
    path = tmp_path / "py801-2.contents"
    path.write_text('{"files": []}')
    return path


def test_it_explains_that_no_contents_hash_command_is_configured(settings, contents_file):
    settings.CONTENTS_HASH_COMMAND = []
    with pytest.raises(CommandError, match="CONTENTS_HASH_COMMAND is not set"):
        run("contents_hash", contents_file)


def test_it_prints_what_the_contents_hash_command_prints(settings, contents_file):
    settings.CONTENTS_HASH_COMMAND = ECHO_HASH
    assert run("contents_hash", contents_file) == "abcdef123456\n"


def test_it_prints_only_the_first_line_of_the_command_output(settings, contents_file):
    script = "echo abcdef123456; echo second-line"
    settings.CONTENTS_HASH_COMMAND = ["sh", "-c", script, "sh", "{path}"]
    assert run("contents_hash", contents_file) == "abcdef123456\n"


def test_it_hands_the_file_to_the_command_in_place_of_path(settings, contents_file):
    settings.CONTENTS_HASH_COMMAND = ["sh", "-c", 'md5sum "$1" | cut -c1-32', "sh", "{path}"]
    expected = hashlib.md5(contents_file.read_bytes()).hexdigest()
    assert run("contents_hash", contents_file) == f"{expected}\n"


def test_it_reports_a_failing_command(settings, contents_file):
    settings.CONTENTS_HASH_COMMAND = ["sh", "-c", "echo no bitfrost >&2; exit 3", "sh", "{path}"]
    with pytest.raises(CommandError, match="no bitfrost"):
        run("contents_hash", contents_file)


def test_it_reports_a_command_that_cannot_be_started(settings, contents_file):
    settings.CONTENTS_HASH_COMMAND = ["/nonexistent/bitfrost-hash", "{path}"]
    with pytest.raises(CommandError, match="/nonexistent/bitfrost-hash"):
        run("contents_hash", contents_file)


def test_it_reports_output_that_is_not_a_contents_hash(settings, contents_file):
    settings.CONTENTS_HASH_COMMAND = ["sh", "-c", "echo 'Traceback (most'", "sh", "{path}"]
    with pytest.raises(CommandError, match="Traceback"):
        run("contents_hash", contents_file)


def test_it_refuses_a_file_that_does_not_exist(settings, tmp_path):
    settings.CONTENTS_HASH_COMMAND = ECHO_HASH
    with pytest.raises(CommandError, match="is not a file"):
        run("contents_hash", tmp_path / "missing.contents")
