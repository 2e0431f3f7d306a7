"""What the benchmarks that start a portal share: a throwaway portal environment (and a
throwaway PostgreSQL database), the seed, gunicorn started exactly as `make run` starts it,
a timed page request, and CPU accounting of its processes."""

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from portal.run import web_command  # noqa: E402 - needs the repository on sys.path

BINDIR = ROOT / ".venv" / "bin"
PYTHON = str(BINDIR / "python")
SEED_SCRIPT = str(Path(__file__).resolve().parent / "schoolseed.py")
# A benchmark's own PostgreSQL database: dropped before and after its run, so the name must
# say so.
DB_NAME_RE = re.compile(r"^xo_bench_[a-z0-9_]{1,53}$")
# Servers per page of the school-server overview (schools/views.py PAGE_SIZE): where the
# benchmarks find its last page.
OVERVIEW_PAGE_SIZE = 50


def overview_pages(servers: int) -> int:
    """How many pages the overview has for `servers` servers."""
    return max(1, -(-servers // OVERVIEW_PAGE_SIZE))


def portal_env(data_dir: str, **overrides) -> dict:
    """The environment of a throwaway production-like portal with its data in `data_dir`."""
    return dict(
        os.environ,
        PORTAL_DATA_DIR=data_dir,
        DJANGO_SETTINGS_MODULE="portal.settings",
        DJANGO_SECRET_KEY="bench-only",
        DJANGO_DEBUG="false",
        DJANGO_HTTPS="false",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="WARNING",
        **overrides,
    )


def migrate_and_seed(
    env: dict, servers: int, builds: int, coordinators: int = 1, *, timeout: float = 900
) -> dict:
    """Migrate the database in `env` and fill it (bench/schoolseed.py); the seed's JSON."""
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=timeout
    )
    seeded = subprocess.run(
        [PYTHON, SEED_SCRIPT, str(servers), str(builds), str(coordinators)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return json.loads(seeded.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_web(env: dict, port: int) -> subprocess.Popen:
    """gunicorn with the production command line (portal/run.py), access log off."""
    argv = web_command(str(BINDIR), f"127.0.0.1:{port}")
    argv += ["--log-level", "warning", "--access-logfile", os.devnull]
    return subprocess.Popen(argv, cwd=ROOT, env=env)


def wait_until(ready, seconds: float = 30, what: str = "the portal") -> None:
    """Poll `ready()` (True, or an exception while not yet) until it holds or time is up."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if ready():
                return
        except (OSError, RuntimeError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {seconds:g} s")
        time.sleep(0.3)


def stop(proc: subprocess.Popen, seconds: float = 30) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=seconds)


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (one level: gunicorn's master and its workers)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                children.append(int(entry))
    return [pid, *children]


def cpu_seconds(pids) -> float:
    """User + system CPU seconds used so far by `pids` (those still running)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def create_database(base_url: str, name: str) -> None:
    """A fresh database `name` (a DB_NAME_RE name) at `base_url` (postgres://user@host:port),
    dropped first if it is there; RuntimeError, with why, when the server refuses."""
    import psycopg

    try:
        with psycopg.connect(f"{base_url}/postgres", autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise RuntimeError(f"cannot create the database {name} at {base_url}: {exc}") from None


def drop_database(base_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{base_url}/postgres", autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed_get(port: int, path: str, cookie: str) -> float:
    """Seconds for one logged-in GET of `path` on a new connection; RuntimeError unless 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    conn.request("GET", path, headers={"Cookie": f"sessionid={cookie}", "Host": "127.0.0.1"})
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status}")
    return elapsed
