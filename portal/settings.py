"""Settings for the XO Release Portal, read from the environment (see `.env.example`).

Every knob has an embedded default that needs no server: SQLite and Celery's filesystem
broker under `PORTAL_DATA_DIR`. A bad value stops start-up with the variable's name.
"""

import ipaddress
import logging
import os
import re
import shlex
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local `.env` is a convenience for developers; real deployments set the environment.
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")


def _env_value(name, reader, **kwargs):
    """Read one variable, turning any parse error into a message that names it."""
    try:
        return reader(name, **kwargs)
    except (ValueError, TypeError, environ.ImproperlyConfigured) as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from exc


def _positive_int(name, default, *, minimum=1):
    value = _env_value(name, env.int, default=default)
    if value < minimum:
        raise ImproperlyConfigured(
            f"{name} must be a whole number of at least {minimum}, not {value}"
        )
    return value


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _bool(name, default: bool) -> bool:
    """A yes/no setting. Unlike env.bool, a typo ("ture") stops start-up instead of
    quietly meaning false."""
    raw = env.str(name, default="").strip().lower()
    if not raw:
        return default
    if raw in _TRUE | _FALSE:
        return raw in _TRUE
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def _argv(name):
    """An argv template (never run through a shell); empty means unset."""
    raw = env.str(name, default="").strip()
    if not raw:
        return []
    try:
        return shlex.split(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: cannot split {raw!r} into arguments: {exc}") from exc


def _directory(name, default):
    path = Path(env.str(name, default=str(default))).expanduser()
    if not path.is_absolute():
        path = (BASE_DIR / path).resolve()
    if path.exists() and not path.is_dir():
        raise ImproperlyConfigured(f"{name}: {path} exists and is not a directory")
    return path


# --- Core -----------------------------------------------------------------------------------

DEBUG = _bool("DJANGO_DEBUG", False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is false "
            "(`make run` sets DJANGO_DEBUG=true for local use)"
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105
ALLOWED_HOSTS = _env_value(
    "DJANGO_ALLOWED_HOSTS", env.list, default=["localhost", "127.0.0.1", "[::1]"]
)
CSRF_TRUSTED_ORIGINS = _env_value("DJANGO_CSRF_TRUSTED_ORIGINS", env.list, default=[])

PORTAL_DATA_DIR = _directory("PORTAL_DATA_DIR", BASE_DIR / "var")
PUPPETCONTENT_OS_DIR = _directory("PUPPETCONTENT_OS_DIR", PORTAL_DATA_DIR / "puppetcontent" / "os")
# Where builds live between upload and publication; uploads are streamed into a temporary
# folder on the same filesystem so the finished file is renamed, never copied.
BUILD_STORE_DIR = PORTAL_DATA_DIR / "builds"
UPLOAD_TEMP_DIR = PORTAL_DATA_DIR / "uploads"
try:
    # SQLite, the filesystem broker and uploads need their folders before anything runs.
    UPLOAD_TEMP_DIR.mkdir(parents=True, exist_ok=True)
except OSError as exc:
    raise ImproperlyConfigured(f"PORTAL_DATA_DIR: cannot create {UPLOAD_TEMP_DIR}: {exc}") from exc

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "portal",
    "releases",
    "schools",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "portal.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before anything that reads the database: a 503, not a 500, while it is away.
    "portal.resilience.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "portal.language.DeploymentLanguageMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "portal.context_processors.roles",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------

DATABASES = {
    "default": _env_value(
        "DATABASE_URL", env.db_url, default=f"sqlite:///{PORTAL_DATA_DIR / 'portal.sqlite3'}"
    )
}
if not DATABASES["default"].get("ENGINE"):
    raise ImproperlyConfigured(
        "DATABASE_URL: unknown scheme; use postgres://user@host:port/name or sqlite:///path"
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share this file: WAL lets readers run beside the writer, and
    # IMMEDIATE transactions take the write lock up front so a busy database makes callers
    # wait (up to the timeout) instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    # Connections are kept, as on PostgreSQL: closing the last connection to a WAL database
    # checkpoints it (with an fsync), which a connection per request made every request pay.
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    # The dashboards' covering indexes carry extra columns for PostgreSQL's index-only
    # scans; SQLite builds them without, as intended, so its warning says nothing new.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
    # A file, not memory, so a Celery worker started by a test can open the same database;
    # one per process, so two test runs in one checkout do not share it.
    DATABASES["default"]["TEST"] = {
        "NAME": str(PORTAL_DATA_DIR / f"test-portal-{os.getpid()}.sqlite3")
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    # An unreachable server must fail a request within seconds, not the OS's TCP timeout.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -----------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling: after this many failed logins for one user name from one address
# within the window, or from one address in all (which several people behind one NAT may
# share), further attempts are refused without checking the password until the oldest
# ones age out.
LOGIN_FAILURE_LIMIT = _positive_int("LOGIN_FAILURE_LIMIT", 5)
LOGIN_FAILURE_IP_LIMIT = _positive_int("LOGIN_FAILURE_IP_LIMIT", 20)
LOGIN_FAILURE_WINDOW = _positive_int("LOGIN_FAILURE_WINDOW", 15 * 60)
# Behind nginx every request comes from 127.0.0.1: name the header nginx sets to the
# client's address (e.g. X-Real-IP); believed only on loopback requests. Empty: the
# connection's own address.
LOGIN_CLIENT_IP_HEADER = env.str("LOGIN_CLIENT_IP_HEADER", default="").strip()
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- Internationalisation -------------------------------------------------------------------

LANGUAGES = [("es", _("Spanish")), ("en", _("English"))]
# The console's language for everyone who has not picked one in the menu, whatever their
# browser says (`portal.language`).
LANGUAGE_CODE = env.str("PORTAL_DEFAULT_LANGUAGE", default="es")
if LANGUAGE_CODE not in dict(LANGUAGES):
    raise ImproperlyConfigured(
        f"PORTAL_DEFAULT_LANGUAGE must be one of {', '.join(dict(LANGUAGES))}, "
        f"not {LANGUAGE_CODE!r}"
    )
# JSON endpoints, where a client's Accept-Language is still honoured.
API_PATH_PREFIX = "/api/"
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = env.str("TIME_ZONE", default="America/Asuncion")
USE_TZ = True

# --- Static files ---------------------------------------------------------------------------

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = _directory("STATIC_ROOT", BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

# --- Uploads --------------------------------------------------------------------------------

MAX_BUILD_BYTES = _positive_int("MAX_BUILD_BYTES", 8 * 1024**3)
# The archive is read to its end while validating; these bound what a hostile or broken
# archive can make a worker do.
MAX_UNPACKED_BYTES = _positive_int("MAX_UNPACKED_BYTES", 64 * 1024**3)
MAX_ARCHIVE_MEMBERS = _positive_int("MAX_ARCHIVE_MEMBERS", 500_000)
MAX_CONTENTS_BYTES = _positive_int("MAX_CONTENTS_BYTES", 32 * 1024**2)
# Validation unpacks each build with GNU tar under fakeroot, as school servers do, into a
# folder here (one unpacked build per running validation; a local disk is best).
VALIDATION_SCRATCH_DIR = _directory("VALIDATION_SCRATCH_DIR", PORTAL_DATA_DIR / "scratch")
# The tar program validation runs: the very version the school servers run, if it differs.
SCHOOL_SERVER_TAR = env.str("SCHOOL_SERVER_TAR", default="tar")
# Character and block devices and FIFOs in a build's tree; off, since an OS image built
# for XOs creates its device nodes at boot (devtmpfs), and a device node is a way in.
ARCHIVE_ALLOW_DEVICE_NODES = _bool("ARCHIVE_ALLOW_DEVICE_NODES", False)
FILE_UPLOAD_TEMP_DIR = str(UPLOAD_TEMP_DIR)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 100

CONTENTS_HASH_COMMAND = _argv("CONTENTS_HASH_COMMAND")
CONTENTS_HASH_TIMEOUT = _positive_int("CONTENTS_HASH_TIMEOUT", 120)
if CONTENTS_HASH_COMMAND and not any("{path}" in arg for arg in CONTENTS_HASH_COMMAND):
    raise ImproperlyConfigured("CONTENTS_HASH_COMMAND must contain {path} in one of its arguments")

# --- USB kits (releases.usb) ---
# Signs a kit's manifest.sha1 ({path}); its standard output becomes manifest.sha1.sig.
USB_MANIFEST_SIGN_COMMAND = _argv("USB_MANIFEST_SIGN_COMMAND")
USB_MANIFEST_SIGN_TIMEOUT = _positive_int("USB_MANIFEST_SIGN_TIMEOUT", 60)
if USB_MANIFEST_SIGN_COMMAND and not any("{path}" in arg for arg in USB_MANIFEST_SIGN_COMMAND):
    raise ImproperlyConfigured(
        "USB_MANIFEST_SIGN_COMMAND must contain {path} in one of its arguments"
    )

# --- oatslite and promotion -----------------------------------------------------------------

OATSLITE_UPDATES_CFG = Path(
    env.str("OATSLITE_UPDATES_CFG", default=str(PORTAL_DATA_DIR / "oatslite" / "updates.cfg"))
)
OATSLITE_ENTRY_TEMPLATE = env.str("OATSLITE_ENTRY_TEMPLATE", default="")
if OATSLITE_ENTRY_TEMPLATE and not Path(OATSLITE_ENTRY_TEMPLATE).is_file():
    raise ImproperlyConfigured(f"OATSLITE_ENTRY_TEMPLATE: {OATSLITE_ENTRY_TEMPLATE} is not a file")
OATSLITE_PRIORITIES = [
    p.strip() for p in _env_value("OATSLITE_PRIORITIES", env.list, default=["normal"]) if p.strip()
]
if not OATSLITE_PRIORITIES:
    raise ImproperlyConfigured("OATSLITE_PRIORITIES must name at least one priority")
OATSLITE_RESTART_COMMAND = _argv("OATSLITE_RESTART_COMMAND")
OATSLITE_HEALTHCHECK_COMMAND = _argv("OATSLITE_HEALTHCHECK_COMMAND")
OATSLITE_COMMAND_TIMEOUT = _positive_int("OATSLITE_COMMAND_TIMEOUT", 60)
SCHOOLSERVER_UPDATE_URL = env.str(
    "SCHOOLSERVER_UPDATE_URL", default="rsync://schoolserver/build-{name}"
)
if "{name}" not in SCHOOLSERVER_UPDATE_URL:
    raise ImproperlyConfigured("SCHOOLSERVER_UPDATE_URL must contain {name}")
PROMOTION_MIN_COVERAGE = _env_value("PROMOTION_MIN_COVERAGE", env.float, default=0.9)
if not 0 <= PROMOTION_MIN_COVERAGE <= 1:
    raise ImproperlyConfigured(
        f"PROMOTION_MIN_COVERAGE must be between 0 and 1, not {PROMOTION_MIN_COVERAGE}"
    )
ALLOW_SELF_APPROVAL = _bool("ALLOW_SELF_APPROVAL", False)
# Update impact (releases.builddiff): what every update costs an XO in NAND beyond the files
# it stores twice, and the changed share of the served tree above which an update is large
# (promoting it then needs a written reason).
XO_UPDATE_OVERHEAD_BYTES = _positive_int("XO_UPDATE_OVERHEAD_BYTES", 16 * 1024**2, minimum=0)
LARGE_UPDATE_SHARE = _env_value("LARGE_UPDATE_SHARE", env.float, default=0.5)
if not 0 < LARGE_UPDATE_SHARE <= 1:
    raise ImproperlyConfigured(
        f"LARGE_UPDATE_SHARE must be above 0 and at most 1, not {LARGE_UPDATE_SHARE}"
    )
# E-mail: who gets what is README "Notifications".
EMAIL_BACKEND = env.str(
    "DJANGO_EMAIL_BACKEND",
    default="django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env.str("DJANGO_EMAIL_HOST", default="localhost")
# Seconds a mail server may take to answer: mails are sent by the workers that also
# validate, publish and deploy, and a mail server that never answers must not hold them.
EMAIL_TIMEOUT = _positive_int("DJANGO_EMAIL_TIMEOUT", 20)
DEFAULT_FROM_EMAIL = env.str("DJANGO_DEFAULT_FROM_EMAIL", default="xo-portal@localhost")

# --- Notifications and monitoring -----------------------------------------------------------

# The portal's address as its users reach it, for links in e-mails (which are sent by
# workers, outside any request). Default: the first DJANGO_ALLOWED_HOSTS name.
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="").strip().rstrip("/")
if not PORTAL_BASE_URL:
    PORTAL_BASE_URL = f"{'https' if _bool('DJANGO_HTTPS', not DEBUG) else 'http'}://" + (
        ALLOWED_HOSTS[0].lstrip(".") if ALLOWED_HOSTS and ALLOWED_HOSTS[0] != "*" else "localhost"
    )
if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", PORTAL_BASE_URL):
    raise ImproperlyConfigured(
        f"PORTAL_BASE_URL must be an http:// or https:// address, not {PORTAL_BASE_URL!r}"
    )
# The hour (0-23, TIME_ZONE) after which the daily digest of silent and lost school
# servers goes to the coordinators.
NOTIFY_DIGEST_HOUR = _env_value("NOTIFY_DIGEST_HOUR", env.int, default=7)
if not 0 <= NOTIFY_DIGEST_HOUR <= 23:
    raise ImproperlyConfigured(
        f"NOTIFY_DIGEST_HOUR must be an hour from 0 to 23, not {NOTIFY_DIGEST_HOUR}"
    )
# /metrics (Prometheus) answers a request with `Authorization: Bearer <METRICS_TOKEN>`, or
# from an address in METRICS_ALLOWED_IPS (addresses or networks). With neither, nobody.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="").strip()
if METRICS_TOKEN and len(METRICS_TOKEN) < 20:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 20 characters long")
METRICS_ALLOWED_IPS = []
for _network in _env_value("METRICS_ALLOWED_IPS", env.list, default=[]):
    try:
        METRICS_ALLOWED_IPS.append(ipaddress.ip_network(_network.strip(), strict=False))
    except ValueError as exc:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_IPS: {exc}") from exc

# --- School servers --------------------------------------------------------------------------


def _duration(name, default: str) -> int:
    """Seconds, from "36h", "7d", "90m", "45s" or a plain number of seconds."""
    raw = env.str(name, default=default).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = int(raw[:-1]) * units[raw[-1]] if raw[-1:] in units else int(raw)
    except (ValueError, KeyError):
        raise ImproperlyConfigured(
            f"{name} must be a duration like 36h, 7d or 90m, not {raw!r}"
        ) from None
    if seconds <= 0:
        raise ImproperlyConfigured(f"{name} must be longer than zero")
    return seconds


# A server that has not reported for this long is "silent", and "lost" after the second.
SCHOOL_SILENT_AFTER = _duration("SCHOOL_SILENT_AFTER", "36h")
SCHOOL_LOST_AFTER = _duration("SCHOOL_LOST_AFTER", "7d")
if SCHOOL_LOST_AFTER <= SCHOOL_SILENT_AFTER:
    raise ImproperlyConfigured("SCHOOL_LOST_AFTER must be longer than SCHOOL_SILENT_AFTER")
# Laptops count as active (the funnel's shares are of them) when they reported in the last
# LAPTOP_ACTIVE_DAYS days.
LAPTOP_ACTIVE_DAYS = _positive_int("LAPTOP_ACTIVE_DAYS", 30)
if LAPTOP_ACTIVE_DAYS > 3660:
    raise ImproperlyConfigured(
        f"LAPTOP_ACTIVE_DAYS must be at most 3660 days, not {LAPTOP_ACTIVE_DAYS}"
    )
# The funnel's laptop counts read every active laptop (a million, nationally): they are
# kept this long, so the page is counted once per worker (once in all with CACHE_URL) every
# few minutes (0: never kept).
LAPTOP_FUNNEL_CACHE_SECONDS = _positive_int("LAPTOP_FUNNEL_CACHE_SECONDS", 300, minimum=0)
# Resumable uploads (the upload page and the API send the archive in chunks): an upload
# nobody has added to for UPLOAD_RESUME_TTL is removed with what it held.
UPLOAD_RESUME_TTL = _duration("UPLOAD_RESUME_TTL", "24h")
UPLOAD_CHUNK_BYTES = _positive_int("UPLOAD_CHUNK_BYTES", 8 * 1024**2)
UPLOAD_CHUNK_MAX_BYTES = _positive_int("UPLOAD_CHUNK_MAX_BYTES", 64 * 1024**2)
if UPLOAD_CHUNK_BYTES > UPLOAD_CHUNK_MAX_BYTES:
    raise ImproperlyConfigured("UPLOAD_CHUNK_BYTES must not be larger than UPLOAD_CHUNK_MAX_BYTES")
UPLOAD_RESUME_MAX_OPEN = _positive_int("UPLOAD_RESUME_MAX_OPEN", 4)
# How long an XO helper link (the build page's contents hash step) stays usable.
XO_HELPER_TTL = _duration("XO_HELPER_TTL", "2h")
# The mothership's rsyncd log, followed every few minutes (empty: not followed).
RSYNCD_LOG = env.str("RSYNCD_LOG", default="")

# What the portal keeps a while (the funnel's laptop counts, build diffs): in each worker's
# memory by default; CACHE_URL=redis://… shares it between the workers (and restarts).
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}
if CACHES["default"]["BACKEND"] not in {
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.redis.RedisCache",
}:
    raise ImproperlyConfigured(
        "CACHE_URL: unsupported scheme (use redis://host:port/db, or leave it unset to keep "
        "things in each worker's memory)"
    )

# --- Celery ---------------------------------------------------------------------------------

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.split("://", 1)[0] not in {"filesystem", "redis", "rediss"}:
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL: unsupported scheme in {CELERY_BROKER_URL!r} "
        "(use redis://… or filesystem://)"
    )
BROKER_DIR = PORTAL_DATA_DIR / "broker"
# Long enough for validating a multi-GB archive; the broker's visibility timeout must
# exceed it, or Redis would hand a running task to a second worker.
CELERY_TASK_TIME_LIMIT = _positive_int("CELERY_TASK_TIME_LIMIT", 4 * 3600)
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": CELERY_TASK_TIME_LIMIT + 3600,
        # Without these, a Redis that accepts the connection but never answers makes a
        # publish (an upload request) wait forever. Consumers wait through the event loop and
        # are not affected.
        "socket_timeout": 3,
        "socket_connect_timeout": 3,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publishing while the broker is down must not hang a web request: fail fast, the sweeper
# sends the message later.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.3}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "releases.tasks.publish_build": {"queue": "mothership"},
    "releases.tasks.apply_deployments": {"queue": "mothership"},
    "releases.tasks.remove_build_files": {"queue": "mothership"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BEAT_SCHEDULE_FILENAME = str(PORTAL_DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "sweep": {"task": "releases.tasks.sweep", "schedule": 60.0},
    "follow-rsyncd-log": {"task": "schools.tasks.follow_rsyncd_log", "schedule": 300.0},
    # E-mail what a lost message or a broker outage kept from being sent, and coverage
    # reaching the minimum (it grows with check-ins, not with an event of ours).
    "notify": {"task": "releases.tasks.notify_sweep", "schedule": 300.0},
    # Sends once a day after NOTIFY_DIGEST_HOUR; running often catches up after an outage.
    "servers-digest": {"task": "schools.tasks.servers_digest", "schedule": 900.0},
}
# A build left in a working state this long without progress is re-enqueued by the
# sweeper, at most SWEEPER_MAX_ATTEMPTS times.
SWEEPER_STALE_AFTER = _positive_int("SWEEPER_STALE_AFTER", 300)
SWEEPER_MAX_ATTEMPTS = _positive_int("SWEEPER_MAX_ATTEMPTS", 3)

# --- Security -------------------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads nothing from it; the token is in a body attribute
# Messages can carry a new API token: keep them server-side, not in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Behind a TLS-terminating proxy in production; DJANGO_HTTPS=false only for plain-HTTP
# test servers on loopback.
HTTPS = _bool("DJANGO_HTTPS", not DEBUG)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = _positive_int("DJANGO_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").strip().upper()
if not isinstance(logging.getLevelName(LOG_LEVEL), int):
    raise ImproperlyConfigured(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
