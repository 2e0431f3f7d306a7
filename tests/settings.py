"""The portal's settings for the test suite, on a data folder and broker queues of this run
only: a running portal (`make run`, or another test run) never takes a test's tasks, never
sees its files, and none of its own reach the tests, whatever it is configured with.

The first process of a run (pytest) makes the folder and names the run; the workers,
servers and commands the tests start inherit both through the environment, so they share
them with the test that started them and with nobody else.
"""

import atexit
import os
import secrets
import shutil
import tempfile

if "PORTAL_TEST_RUN" not in os.environ:
    os.environ["PORTAL_TEST_RUN"] = secrets.token_hex(4)
    _folder = tempfile.mkdtemp(prefix="portal-test-")
    os.environ["PORTAL_DATA_DIR"] = _folder
    atexit.register(shutil.rmtree, _folder, ignore_errors=True)

from portal.settings import *  # noqa: F403
from portal.settings import CELERY_TASK_ROUTES

TEST_RUN = os.environ["PORTAL_TEST_RUN"]
CELERY_TASK_DEFAULT_QUEUE = f"test-{TEST_RUN}-default"
CELERY_TASK_ROUTES = {
    task: {**route, "queue": f"test-{TEST_RUN}-{route['queue']}"}
    for task, route in CELERY_TASK_ROUTES.items()
}
# What a test's worker consumes (`-Q`): this run's queues only.
TEST_WORKER_QUEUES = ",".join(
    sorted({CELERY_TASK_DEFAULT_QUEUE} | {route["queue"] for route in CELERY_TASK_ROUTES.values()})
)
# The funnel counts laptops on every request in tests (a test that needs the cache turns it
# on): a count kept from one test would leak into the next.
LAPTOP_FUNNEL_CACHE_SECONDS = 0
