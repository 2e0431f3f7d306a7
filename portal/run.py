"""`make run`: migrate, seed the demo data once, then run web + worker + beat together on
the embedded defaults (SQLite, filesystem broker under PORTAL_DATA_DIR) until Ctrl-C."""

import os
import signal
import subprocess
import sys
import time

HOST = os.environ.get("PORTAL_HOST", "127.0.0.1")
PORT = os.environ.get("PORTAL_PORT", "8000")


def web_command(bindir: str, bind: str) -> list[str]:
    """gunicorn as the portal runs it: gthread keeps each worker's heartbeat going while a
    multi-GB upload streams in (the benchmarks start it through this too)."""
    return [
        os.path.join(bindir, "gunicorn"), "portal.wsgi", "--bind", bind,
        "--worker-class", "gthread", "--workers", "2", "--threads", "4",
        "--timeout", "120", "--access-logfile", "-",
    ]  # fmt: skip


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from portal.demo import DEMO_USERS

    settings.PORTAL_DATA_DIR.mkdir(parents=True, exist_ok=True)
    call_command("migrate", interactive=False, verbosity=0)
    if not get_user_model().objects.exists():
        call_command("seed_demo", force=True, verbosity=0)

    python = sys.executable
    bindir = os.path.dirname(python)
    commands = {
        "web": web_command(bindir, f"{HOST}:{PORT}"),
        "worker": [
            os.path.join(bindir, "celery"),
            "-A",
            "portal",
            "worker",
            "-Q",
            "default,mothership",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "-n",
            "portal-worker@%h",
        ],
        "beat": [os.path.join(bindir, "celery"), "-A", "portal", "beat", "--loglevel", "INFO"],
    }
    procs = {name: subprocess.Popen(argv) for name, argv in commands.items()}

    url = f"http://{HOST}:{PORT}/"
    print(f"\nXO Release Portal: {url}   (data in {settings.PORTAL_DATA_DIR})")
    print("Demo logins (user / password / role):")
    for username, password, role in DEMO_USERS:
        print(f"  {username:<12} {password:<18} {role or 'superuser'}")
    print("Ctrl-C stops web, worker and beat.\n", flush=True)

    stopping = False

    def stop(*_args):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    while not stopping:
        for name, proc in procs.items():
            if proc.poll() is not None:
                print(f"{name} exited with status {proc.returncode}; stopping the others.")
                status = proc.returncode or 1
                stopping = True
        time.sleep(0.5)
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return status


if __name__ == "__main__":
    sys.exit(main())
