"""The school servers' report script, run for real with /bin/sh (dash on Debian) against a
fake XS-rsync folder and the portal's live check-in endpoint."""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings

from schools.checkin import parse_checkin
from schools.models import CheckIn, SchoolServer, SyncState, SyncStatus
from schools.services import server_token_rotate

SCRIPT = Path(__file__).resolve().parents[2] / "schools" / "client" / "xs-sync-report"
HOSTNAME = "xs-caacupe-1.local"


def run_script(*args, env=None, sh_flags=(), timeout=60):
    """The script as cron would run it: a bare environment, nothing inherited but PATH."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    return subprocess.run(
        ["/bin/sh", *sh_flags, str(SCRIPT), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_conf(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def add_build(pub: Path, name: str, payload: bytes, *, ext="bz2", md5=None, name_text=None):
    """The 4 files the mothership publishes, written as XS-rsync would have received them."""
    tarball = pub / f"{name}-tree.tar.{ext}"
    tarball.write_bytes(payload)
    digest = md5 or hashlib.md5(payload).hexdigest()
    (pub / f"{tarball.name}.md5").write_text(f"{digest}  {tarball.name}\n")
    (pub / f"{name}.contents").write_text('{"files": []}')
    (pub / f"{name}.name").write_bytes((name_text or f"{name}\n").encode())
    return hashlib.md5(payload).hexdigest()


def copy_published(build, pub: Path):
    """A portal-published build's 4 files, copied from puppetcontent as puppet would."""
    source = Path(settings.PUPPETCONTENT_OS_DIR)
    for filename in (
        build.tarball_name,
        f"{build.tarball_name}.md5",
        build.contents_name,
        f"{build.name}.name",
    ):
        shutil.copyfile(source / filename, pub / filename)
    return pub / build.tarball_name


@pytest.fixture
def xs(tmp_path):
    """An XS-rsync folder holding builds the portal does not know, plus junk."""
    root = tmp_path / "xs-rsync"
    pub = root / "xobuilds-packed"
    pub.mkdir(parents=True)
    sums = {
        # CRLF in .name and an upper-case .md5 file: still the same build, still verified.
        "py900-1": add_build(pub, "py900-1", b"tree one" * 100, name_text="py900-1\r\n"),
        # Its .md5 does not match: reported with its real md5, not verified.
        "py900-2": add_build(pub, "py900-2", b"tree two" * 100, ext="xz", md5="0" * 32),
    }
    (pub / "py900-1-tree.tar.bz2.md5").write_text(
        f"{sums['py900-1'].upper()}  py900-1-tree.tar.bz2\n"
    )
    # Only a .name: xs-refresh-xobuilds skips it (no tarball beside it), so nothing is reported.
    (pub / "py900-3.name").write_text("py900-3\n")
    # Junk: not a build, a .name whose content is not a build name, an empty .name.
    (pub / "README.txt").write_text("nothing to see\n")
    (pub / "broken.name").write_text("../../etc/passwd\n")
    (pub / "empty.name").write_text("")
    # Never read the real /etc/xs-sync-report.conf: tests name their settings file.
    conf = write_conf(tmp_path / "empty.conf", "")
    return SimpleNamespace(root=root, pub=pub, sums=sums, conf=str(conf))


@pytest.fixture
def school_server(transactional_db):
    server = SchoolServer.objects.create(name="Caacupé 1", hostname=HOSTNAME, school="Caacupé")
    return server, server_token_rotate(server=server)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_it_reports_what_the_school_server_holds_and_the_portal_records_it(
    live_server, school_server, published, xs, tmp_path
):
    server, token = school_server
    root, sums, pub = xs.root, xs.sums, xs.pub
    good = published()
    copy_published(good, pub)
    damaged = published()
    tarball = copy_published(damaged, pub)
    tarball.write_bytes(tarball.read_bytes() + b"bit rot")
    status_file = tmp_path / "last-status"
    status_file.write_text("1\n")
    conf = write_conf(
        tmp_path / "xs-sync-report.conf",
        "# written by the installer\n"
        f'PORTAL_URL="{live_server.url}/"\n'
        f"export PORTAL_TOKEN='{token}'\r\n"
        f"XS_RSYNC_DIR={root}   # a comment\n"
        f"XS_HOSTNAME={HOSTNAME}\n"
        f"XS_SYNC_STATUS_FILE={status_file}\n"
        "COLOUR=blue\n",
    )

    result = run_script(env={"XS_SYNC_REPORT_CONF": str(conf)})

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "ignored unknown setting COLOUR" in result.stderr
    assert f"{damaged.name}: {tarball} does not match its .md5" in result.stderr
    assert "skipped" in result.stderr and "broken.name" in result.stderr
    states = {
        s.build_name: (s.status, s.build_id, s.md5) for s in SyncState.objects.filter(server=server)
    }
    assert states == {
        good.name: (SyncStatus.VERIFIED, good.pk, good.md5),
        damaged.name: (
            SyncStatus.FAILED,
            damaged.pk,
            hashlib.md5(tarball.read_bytes()).hexdigest(),
        ),
        "py900-1": (SyncStatus.VERIFIED, None, sums["py900-1"]),
        "py900-2": (SyncStatus.PRESENT, None, sums["py900-2"]),
    }
    server.refresh_from_db()
    assert server.last_report_at is not None
    assert server.last_report_source == "checkin"
    assert server.last_refresh_status == 1
    assert server.disk_free_bytes > 0
    assert server.disk_free_bytes % 1024 == 0
    assert server.client_version == "1"
    assert abs(server.clock_skew_seconds) < 60
    assert f"{damaged.name}: md5" in server.last_error
    assert "last refresh exited with status 1" in server.last_error
    assert CheckIn.objects.filter(server=server).count() == 1


def test_it_prints_a_report_the_portal_accepts_with_dry_run(xs, tmp_path):
    sums = xs.sums
    status_file = tmp_path / "last-status"
    status_file.write_text("007\n")

    result = run_script(
        "--dry-run",
        env={
            "XS_SYNC_REPORT_CONF": xs.conf,
            "XS_RSYNC_DIR": str(xs.root),
            "XS_HOSTNAME": HOSTNAME,
            "XS_SYNC_STATUS_FILE": str(status_file),
        },
    )

    assert result.returncode == 0, result.stderr
    report = parse_checkin(result.stdout.encode())
    assert report["hostname"] == HOSTNAME
    assert report["builds"] == [
        {"name": "py900-1", "md5": sums["py900-1"], "verified": True},
        {"name": "py900-2", "md5": sums["py900-2"], "verified": False},
    ]
    assert report["last_refresh_status"] == 7
    assert "XS-rsync does not serve py900-3" in result.stderr
    assert report["disk_free_bytes"] > 0
    assert report["clock"].tzinfo is not None
    assert report["client_version"] == "1"
    assert json.loads(result.stdout)["clock"].endswith("Z")


def test_it_reports_names_only_when_verification_is_off(xs):
    result = run_script(
        "--dry-run",
        env={
            "XS_SYNC_REPORT_CONF": xs.conf,
            "XS_RSYNC_DIR": str(xs.root),
            "XS_HOSTNAME": HOSTNAME,
            "XS_VERIFY": "no",
        },
    )
    assert result.returncode == 0, result.stderr
    assert parse_checkin(result.stdout.encode())["builds"] == [
        {"name": "py900-1"},
        {"name": "py900-2"},
    ]


def test_it_lets_the_environment_win_over_the_settings_file(xs, tmp_path):
    root = xs.root
    conf = write_conf(
        tmp_path / "xs-sync-report.conf",
        f"XS_RSYNC_DIR={root}\nXS_HOSTNAME=from-the-file.local\nXS_VERIFY=no\n",
    )

    result = run_script(
        "--dry-run", env={"XS_SYNC_REPORT_CONF": str(conf), "XS_HOSTNAME": "from-env.local"}
    )

    assert result.returncode == 0, result.stderr
    assert parse_checkin(result.stdout.encode())["hostname"] == "from-env.local"


def test_it_exits_3_with_the_servers_message_when_the_token_is_wrong(
    live_server, school_server, xs
):
    server, _token = school_server
    root = xs.root

    result = run_script(
        env={
            "XS_SYNC_REPORT_CONF": xs.conf,
            "PORTAL_URL": live_server.url,
            "PORTAL_TOKEN": "not-the-right-token",
            "XS_RSYNC_DIR": str(root),
            "XS_HOSTNAME": HOSTNAME,
        }
    )

    assert result.returncode == 3
    assert "HTTP 401" in result.stderr
    assert "Unknown or revoked token." in result.stderr
    assert not SyncState.objects.exists()
    assert not CheckIn.objects.exists()
    server.refresh_from_db()
    assert server.last_report_at is None


def test_it_exits_3_with_the_servers_message_when_the_hostname_is_not_the_tokens(
    live_server, school_server, xs
):
    _server, token = school_server
    root = xs.root

    result = run_script(
        env={
            "XS_SYNC_REPORT_CONF": xs.conf,
            "PORTAL_URL": live_server.url,
            "PORTAL_TOKEN": token,
            "XS_RSYNC_DIR": str(root),
            "XS_HOSTNAME": "xs-other.local",
        }
    )

    assert result.returncode == 3
    assert f"This token belongs to {HOSTNAME}, not xs-other.local." in result.stderr
    assert not SyncState.objects.exists()


def test_it_exits_3_when_the_portal_cannot_be_reached(xs):
    root = xs.root

    result = run_script(
        env={
            "XS_SYNC_REPORT_CONF": xs.conf,
            "PORTAL_URL": f"http://127.0.0.1:{closed_port()}",
            "PORTAL_TOKEN": "a-token",
            "XS_RSYNC_DIR": str(root),
            "XS_HOSTNAME": HOSTNAME,
        }
    )

    assert result.returncode == 3
    assert "could not reach" in result.stderr


@pytest.mark.parametrize(
    ("conf_text", "extra_env", "message"),
    [
        (None, {}, "does not exist"),
        ("", {}, "PORTAL_URL is not set"),
        ("PORTAL_URL=https://portal.example.org\n", {}, "PORTAL_TOKEN is not set"),
        ("PORTAL_URL=ftp://portal.example.org\nPORTAL_TOKEN=t\n", {}, "must start with"),
        (
            "PORTAL_URL=https://p.example.org\nPORTAL_TOKEN=t\nXS_VERIFY=maybe\n",
            {},
            "XS_VERIFY must be yes or no",
        ),
        (
            "PORTAL_URL=https://p.example.org\nPORTAL_TOKEN=t\n",
            {"XS_HOSTNAME": "bad_host;name"},
            "is not valid",
        ),
        (
            "PORTAL_URL=https://p.example.org\nPORTAL_TOKEN=t\nXS_RSYNC_PUB=nowhere\n",
            {},
            "nowhere is not a folder",
        ),
        ('PORTAL_URL="https://p.example.org\nPORTAL_TOKEN=t\n', {}, 'missing closing "'),
    ],
)
def test_it_exits_2_with_a_clear_message_when_the_settings_are_wrong(
    xs, tmp_path, conf_text, extra_env, message
):
    root = xs.root
    conf = tmp_path / "xs-sync-report.conf"
    if conf_text is not None:
        write_conf(conf, conf_text)

    result = run_script(
        env={
            "XS_SYNC_REPORT_CONF": str(conf),
            "XS_RSYNC_DIR": str(root),
            "XS_HOSTNAME": HOSTNAME,
            **extra_env,
        }
    )

    assert result.returncode == 2
    assert message in result.stderr
    assert str(SCRIPT.name) in result.stderr


def test_it_reads_the_settings_file_literally_and_never_executes_it(xs, tmp_path):
    root = xs.root
    tag = uuid.uuid4().hex
    markers = [tmp_path / f"pwned-{tag}-{n}" for n in range(6)]
    conf = write_conf(
        tmp_path / "xs-sync-report.conf",
        f"PORTAL_URL=$(touch {markers[0]})\n"
        f"PORTAL_TOKEN=`touch {markers[1]}`\n"
        f'XS_HOSTNAME="$(touch {markers[2]})"\n'
        f"SOMETHING_ELSE=$(touch {markers[3]})\n"
        f"$(touch {markers[4]})\n"
        f"XS_RSYNC_PUB=pub; touch {markers[5]}\n"
        f"XS_RSYNC_DIR={root}\n",
    )

    result = run_script(env={"XS_SYNC_REPORT_CONF": str(conf)})

    assert result.returncode == 2
    assert "PORTAL_URL must start with https://" in result.stderr
    assert "ignored unknown setting SOMETHING_ELSE" in result.stderr
    assert [m for m in markers if m.exists()] == []


def test_it_never_puts_the_token_on_a_command_line(live_server, school_server, xs, tmp_path):
    """curl is replaced by a wrapper that logs its arguments, then runs the real curl."""
    server, token = school_server
    root = xs.root
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    argv_log = tmp_path / "curl-argv.log"
    wrapper = bin_dir / "curl"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argv_log}\nexec {shutil.which("curl")} "$@"\n'
    )
    wrapper.chmod(0o755)
    temp = tmp_path / "temp"
    temp.mkdir()

    result = run_script(
        sh_flags=("-x",),
        env={
            "XS_SYNC_REPORT_CONF": xs.conf,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "TMPDIR": str(temp),
            "PORTAL_URL": live_server.url,
            "PORTAL_TOKEN": token,
            "XS_RSYNC_DIR": str(root),
            "XS_HOSTNAME": HOSTNAME,
        },
    )

    assert result.returncode == 0, result.stderr
    calls = argv_log.read_text()
    assert "/api/schools/checkin/" in calls
    assert token not in calls
    assert "-H @" in calls  # the header came from a file...
    assert list(temp.iterdir()) == []  # ...which is gone
    assert (
        SyncState.objects.filter(server=server).count() == 2
    )  # py900-1 and py900-2 (py900-3 has no tarball)
    # The trace (`sh -x`) shows the token only in shell builtins, which start no process.
    traced = [line for line in result.stderr.splitlines() if token in line]
    assert traced
    assert all(line.startswith(("+ PORTAL_TOKEN=", "+ [ ", "+ printf ")) for line in traced)
    # And in the source: the token is only tested, or written into that file by printf.
    uses = [
        line.strip()
        for line in SCRIPT.read_text().splitlines()
        if re.search(r"\$\{?PORTAL_TOKEN\b", line)
    ]
    allowed = re.compile(
        r"^(PORTAL_TOKEN=\$\{PORTAL_TOKEN:-|(if )?\[ -n \"\$PORTAL_TOKEN\" \]"
        r"|case \$PORTAL_TOKEN in$|printf '[^']*' \"\$PORTAL_TOKEN\" > \"\$TMP/auth\"$)"
    )
    assert len(uses) == 6
    assert [line for line in uses if not allowed.match(line)] == []


def test_it_is_plain_posix_sh():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["/bin/sh", "-n", str(SCRIPT)], check=False).returncode == 0
    result = run_script("--help")
    assert result.returncode == 0
    assert "PORTAL_URL" in result.stdout and "--dry-run" in result.stdout
