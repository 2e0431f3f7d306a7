"""`portal/settings.py` starts on its defaults and stops on a bad value, naming the variable.

Each case is a fresh interpreter (settings are read once per process) given only the
variables it names, so nothing leaks in from the environment the suite runs in. Starting
Django costs about half a second of imports, so the module starts every case at once.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
SHOW = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'DEBUG': s.DEBUG, 'HTTPS': s.HTTPS, "
    "'DATABASE': str(s.DATABASES['default']['NAME']), 'BROKER': s.CELERY_BROKER_URL, "
    "'PUPPETCONTENT_OS_DIR': str(s.PUPPETCONTENT_OS_DIR), "
    "'MAX_BUILD_BYTES': s.MAX_BUILD_BYTES, 'CONTENTS_HASH_COMMAND': s.CONTENTS_HASH_COMMAND, "
    "'CACHE': s.CACHES['default']['BACKEND'], 'CACHE_AT': s.CACHES['default']['LOCATION']}))"
)

# Refused with the variable's name, as they should be.
REFUSED = [
    ("MAX_BUILD_BYTES", "lots"),
    ("MAX_BUILD_BYTES", "0"),
    ("CONTENTS_HASH_COMMAND", 'echo "unclosed'),
    ("CONTENTS_HASH_COMMAND", "echo"),
    ("CELERY_BROKER_URL", "amqp://x"),
    ("PORTAL_BASE_URL", "portal.example.org"),
    ("NOTIFY_DIGEST_HOUR", "24"),
    ("METRICS_TOKEN", "short"),
    ("METRICS_ALLOWED_IPS", "10.0.0.300"),
    ("XO_UPDATE_OVERHEAD_BYTES", "-1"),
    ("LARGE_UPDATE_SHARE", "half"),
    ("LARGE_UPDATE_SHARE", "0"),
    ("LARGE_UPDATE_SHARE", "1.5"),
    ("DJANGO_EMAIL_TIMEOUT", "0"),
    ("LAPTOP_ACTIVE_DAYS", "0"),
    ("LAPTOP_ACTIVE_DAYS", "a month"),
    ("LAPTOP_FUNNEL_CACHE_SECONDS", "-1"),
    ("CACHE_URL", "memcache://127.0.0.1:11211"),
]
YES_NO_TYPOS = [("DJANGO_HTTPS", "ture"), ("DJANGO_DEBUG", "maybe"), ("ALLOW_SELF_APPROVAL", "si")]
UNNAMED = [("DATABASE_URL", "garbage"), ("LOG_LEVEL", "verbose")]

CASES = {
    "defaults": {"DJANGO_DEBUG": None},
    "no secret key": {"DJANGO_SECRET_KEY": None},
    "shared cache": {"CACHE_URL": "redis://127.0.0.1:6379/3"},
    "negative hsts": {"DJANGO_HSTS_SECONDS": "-5"},
    **{f"{name}={value}": {name: value} for name, value in REFUSED + YES_NO_TYPOS + UNNAMED},
}


def popen(data_dir: Path, variables: dict):
    """Django started with the production-like base (DEBUG off) plus `variables`."""
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DJANGO_SECRET_KEY": "x",
        "DJANGO_DEBUG": "false",
        "PORTAL_DATA_DIR": str(data_dir),
    }
    env.update(variables)
    env = {name: value for name, value in env.items() if value is not None}
    return subprocess.Popen(
        [sys.executable, "-c", SHOW],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Started:
    def __init__(self, proc, data_dir):
        self.stdout, stderr = proc.communicate(timeout=60)
        self.returncode = proc.returncode
        self.stderr = stderr
        self.data_dir = data_dir

    @property
    def error(self) -> str:
        """The exception's own message, not the traceback (whose source lines quote names)."""
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    data_dirs = {case: tmp_path_factory.mktemp("data") for case in CASES}
    data_dirs["data dir is a file"] = data_dirs["defaults"] / "file"
    data_dirs["data dir is a file"].write_text("not a folder")
    cases = {**CASES, "data dir is a file": {}}
    procs = {case: popen(data_dirs[case], variables) for case, variables in cases.items()}
    return {case: Started(proc, data_dirs[case]) for case, proc in procs.items()}


def test_it_starts_on_the_defaults_with_only_a_secret_key(started):
    result = started["defaults"]
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["DEBUG"] is False
    # With DEBUG off, HTTPS hardening is on unless switched off explicitly.
    assert values["HTTPS"] is True
    assert values["DATABASE"] == str(result.data_dir / "portal.sqlite3")
    assert values["BROKER"] == "filesystem://"
    assert values["PUPPETCONTENT_OS_DIR"] == str(result.data_dir / "puppetcontent" / "os")
    assert values["MAX_BUILD_BYTES"] == 8 * 1024**3
    assert values["CONTENTS_HASH_COMMAND"] == []
    assert values["CACHE"] == "django.core.cache.backends.locmem.LocMemCache"
    assert (result.data_dir / "uploads").is_dir()


def test_a_cache_url_shares_what_the_workers_keep(started):
    result = started["shared cache"]
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["CACHE"] == "django.core.cache.backends.redis.RedisCache"
    assert values["CACHE_AT"] == "redis://127.0.0.1:6379/3"


@pytest.mark.parametrize(("name", "value"), REFUSED)
def test_it_stops_on_a_bad_value_and_names_the_variable(started, name, value):
    result = started[f"{name}={value}"]
    assert result.returncode != 0
    assert name in result.error


def test_it_stops_without_a_secret_key_when_debug_is_off(started):
    result = started["no secret key"]
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.error


def test_it_stops_when_the_data_folder_is_a_file(started):
    result = started["data dir is a file"]
    assert result.returncode != 0
    assert "PORTAL_DATA_DIR" in result.error


@pytest.mark.parametrize(("name", "value"), YES_NO_TYPOS)
def test_it_stops_on_a_yes_no_value_it_does_not_understand(started, name, value):
    result = started[f"{name}={value}"]
    assert result.returncode != 0
    assert name in result.error


def test_it_stops_on_a_negative_hsts_duration(started):
    result = started["negative hsts"]
    assert result.returncode != 0
    assert "DJANGO_HSTS_SECONDS" in result.error


@pytest.mark.parametrize(("name", "value"), UNNAMED)
def test_it_names_the_variable_when_a_value_is_unusable(started, name, value):
    result = started[f"{name}={value}"]
    assert result.returncode != 0
    assert name in result.error
