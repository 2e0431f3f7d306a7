"""School servers x published builds for the benchmarks, and what each server holds.

Imported without Django by the load generators (the pure helpers below), and run as a
script, in the portal's environment, to fill the database:

    python bench/schoolseed.py SERVERS BUILDS COORDINATORS

It prints one JSON line: a logged-in session key per coordinator (`bench-1`, `bench-2`, …).
The data is a function of the numbers only, so a generator knows every server's token and
the builds it holds without asking the database.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPARTMENTS = 17


def hostname(number: int) -> str:
    return f"xs-{number:05d}.local"


def token(number: int) -> str:
    return f"bench-token-{number:06d}"


def build_name(index: int) -> str:
    return f"py{index:03d}-1"


def build_md5(index: int) -> str:
    return f"{index:032x}"


def department(number: int) -> str:
    return f"Departamento {number % DEPARTMENTS}"


def holds(number: int, index: int) -> bool:
    """About 90 % of the (server, build) pairs: there are lagging servers for every build."""
    return (number + index) % 10 != 0


def seed(servers: int, builds: int, coordinators: int) -> dict:
    """1. coordinators with a session each; 2. published builds, the newest offered;
    3. servers with a report token, a department and a last report spread over 60 hours;
    4. one `present` state per held pair."""
    from datetime import timedelta

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import Group, User
    from django.contrib.sessions.backends.db import SessionStore
    from django.utils import timezone

    from releases.models import Build, BuildStatus, OfferedEntry
    from schools.models import SchoolServer, SyncState, hash_token

    now = timezone.now()
    group = Group.objects.get(name="coordinators")
    sessions = []
    for number in range(1, coordinators + 1):
        user = User.objects.create_user(f"bench-{number}", password="bench-password-1")
        user.groups.add(group)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        sessions.append(session.session_key)
    build_rows = Build.objects.bulk_create(
        Build(name=build_name(index), compression="bz2", status=BuildStatus.PUBLISHED, size=1,
              md5=build_md5(index), sha256="0" * 64, contents_size=1, contents_sha256="0" * 64,
              store_dir=f"s{index}", uploaded_by=user, original_filename="x",
              contents_hash=f"hash{index:08d}", published_at=now - timedelta(days=builds - index))
        for index in range(builds)
    )  # fmt: skip
    newest = build_rows[-1]
    Build.objects.filter(pk=newest.pk).update(status=BuildStatus.OFFERED)
    OfferedEntry.objects.create(section=newest.contents_hash, build=newest, name=newest.name,
                                priority="normal", update_path="x", position=1)  # fmt: skip
    server_rows = SchoolServer.objects.bulk_create(
        SchoolServer(hostname=hostname(number), name=f"xs-{number}", school=f"Escuela {number}",
                     department=department(number), token_hash=hash_token(token(number)),
                     last_report_at=now - timedelta(hours=number % 60))
        for number in range(servers)
    )  # fmt: skip
    batch = []
    for number, server in enumerate(server_rows):
        for index, build in enumerate(build_rows):
            if holds(number, index):
                held_since = now - timedelta(hours=index)
                batch.append(
                    SyncState(server=server, build=build, build_name=build.name,
                              status="present", held_since=held_since)
                )  # fmt: skip
        if len(batch) > 20000:
            SyncState.objects.bulk_create(batch)
            batch = []
    SyncState.objects.bulk_create(batch)
    return {"sessions": sessions}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    print(json.dumps(seed(*(int(arg) for arg in sys.argv[1:4]))))
