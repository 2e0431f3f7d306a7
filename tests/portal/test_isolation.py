"""`make test` while a `make run` portal is up: the suite never shares a data folder or broker
queues with it (`tests/settings.py`), even when the environment points both at the same
folder and the same broker, which is how the demo's worker once took the tests' tasks."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.worker
ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(path: Path, text: str, proc, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    pytest.fail(f"{text!r} never appeared:\n{path.read_text(errors='replace')[-3000:]}")


def test_the_suite_runs_beside_a_running_portal_on_the_same_folder_and_broker(tmp_path):
    shared = tmp_path / "var"
    # The developer's environment, as `make run` and a plain `make test` would both see it.
    developer = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PORTAL_TEST_RUN", "DJANGO_SETTINGS_MODULE", "DATABASE_URL")
    }
    developer["PORTAL_DATA_DIR"] = str(shared)
    running_log = tmp_path / "make-run.log"
    with open(running_log, "wb") as log:
        running = subprocess.Popen(
            [sys.executable, "-m", "portal.run"],
            cwd=ROOT,
            env=dict(developer, DJANGO_DEBUG="true", PORTAL_PORT=str(free_port())),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(running_log, " ready.", running)
        suite = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/releases/test_pipeline_worker.py"],
            cwd=ROOT, env=developer, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert suite.returncode == 0, suite.stdout[-3000:] + suite.stderr[-3000:]
        assert " passed" in suite.stdout
        # Nothing of the suite's reached the running portal: no task, no file.
        output = running_log.read_text(errors="replace")
        assert "Task releases.tasks.validate_build" not in output, output[-3000:]
        assert not list((shared / "builds").glob("e2e-*"))
        assert not list((shared / "puppetcontent" / "os").glob("e2e-*"))
        assert running.poll() is None, output[-3000:]
    finally:
        os.killpg(running.pid, signal.SIGTERM)
        try:
            running.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(running.pid, signal.SIGKILL)
            running.wait()
