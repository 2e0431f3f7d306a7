"""A 1 GiB USB kit streamed through gunicorn, against GNU tar of the same files.

Run: .venv/bin/python bench/usbkit.py [--size-mib 1024] [--rounds 3] [--tmp-dir DIR]

1. A throwaway portal (bench/harness.py: fresh PORTAL_DATA_DIR, SQLite, DEBUG off) whose
   puppet content folder holds one published build: a `--size-mib` archive of random
   bytes (the kit does not look inside it), its `.md5`, a `.contents` and a `.name`; an
   uploader with a logged-in session.
2. gunicorn as `make run` starts it (gthread, 2 workers x 4 threads).
3. A first download, which also computes and keeps the archive's SHA-1 (one read) and
   leaves the files in the page cache for every later step.
4. `--rounds` rounds of: `curl` of the kit to /dev/null (bytes counted and checked against
   Content-Length), then `tar -cf - FILES | cat > /dev/null`, the baseline, on the same
   files. The medians are compared. `tar -cf - FILES > /dev/null` is timed too: GNU tar
   notices its archive is /dev/null and does not read the files, so it is no baseline.
5. The web workers' peak RSS (VmHWM, the kernel's own high-water mark).

It prints figures and ratios; it asserts nothing about time. Exit status 1 when a download
was not the announced length.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

NAME = "py999-1"
CHUNK = 4 * 1024 * 1024


def seed(size: int) -> dict:
    """In the portal's environment: the build's published files and row, and a session."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import Group, User
    from django.contrib.sessions.backends.db import SessionStore
    from django.utils import timezone

    from releases.models import Build, BuildStatus

    folder = Path(settings.PUPPETCONTENT_OS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    tarball = folder / f"{NAME}-tree.tar.xz"
    md5 = hashlib.md5(usedforsecurity=False)
    generator = random.Random(99)
    with open(tarball, "wb") as f:
        left = size
        while left:
            chunk = generator.randbytes(min(CHUNK, left))
            md5.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    contents = json.dumps({"files": [f"usr/lib/file{n}" for n in range(2000)]}).encode()
    (folder / f"{tarball.name}.md5").write_text(f"{md5.hexdigest()}  {tarball.name}\n")
    (folder / f"{NAME}.contents").write_bytes(contents)
    (folder / f"{NAME}.name").write_text(f"{NAME}\n")

    user = User.objects.create_user("bench-uploader", password="bench-password-1")
    user.groups.add(Group.objects.get(name="uploaders"))
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    Build.objects.create(
        name=NAME, compression="xz", status=BuildStatus.PUBLISHED, size=size,
        md5=md5.hexdigest(), sha256="0" * 64, contents_size=len(contents),
        contents_sha256=hashlib.sha256(contents).hexdigest(), store_dir="bench",
        uploaded_by=user, original_filename=tarball.name, published_at=timezone.now(),
    )  # fmt: skip
    names = [tarball.name, f"{tarball.name}.md5", f"{NAME}.contents", f"{NAME}.name"]
    return {"session": session.session_key, "folder": str(folder), "files": names}


def download(port: int, session: str) -> tuple[float, int, int]:
    """Seconds, bytes received and the announced Content-Length of one kit download."""
    started = time.perf_counter()
    result = subprocess.run(
        ["curl", "-sS", "-o", os.devnull, "-D", "-", "-w", "%{size_download}\n",
         "-H", f"Cookie: sessionid={session}", "-H", "Host: 127.0.0.1",
         f"http://127.0.0.1:{port}/builds/{NAME}/usb-kit/"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    lines = result.stdout.strip().splitlines()
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    return elapsed, int(lines[-1]), length


def timed_shell(argv: list[str], cwd: str, pipe_to_cat: bool) -> float:
    started = time.perf_counter()
    with open(os.devnull, "wb") as null:
        if pipe_to_cat:
            tar = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE)
            subprocess.run(["cat"], stdin=tar.stdout, stdout=null, check=True)
            tar.stdout.close()
            tar.wait()
        else:
            subprocess.run(argv, cwd=cwd, stdout=null, check=True)
    return time.perf_counter() - started


def peak_rss_mib(pids) -> float:
    peaks = []
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return max(peaks, default=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tmp-dir", default=None)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="usbkit-bench-", dir=args.tmp_dir)
    env = harness.portal_env(str(Path(workdir) / "data"))
    web = None
    try:
        print(f"load average before: {harness.load_average()}")
        subprocess.run(
            [harness.PYTHON, "manage.py", "migrate", "-v0"], cwd=harness.ROOT, env=env, check=True
        )
        started = time.perf_counter()
        seeded = json.loads(
            subprocess.run(
                [harness.PYTHON, __file__, "--seed", str(args.size_mib << 20)],
                cwd=harness.ROOT, env=env, check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
        )  # fmt: skip
        print(f"generated {args.size_mib} MiB in {time.perf_counter() - started:.1f} s")
        port = harness.free_port()
        web = harness.start_web(env, port)
        health = ["curl", "-sf", "-o", os.devnull, f"http://127.0.0.1:{port}/healthz"]
        harness.wait_until(lambda: subprocess.run(health).returncode == 0)
        workers = harness.process_tree(web.pid)[1:]
        idle_rss = peak_rss_mib(workers)

        first, received, length = download(port, seeded["session"])
        print(f"first download (computes the archive's SHA-1): {first:.2f} s, {received} bytes")
        wrong = received != length
        kits, tars, tars_null = [], [], []
        tar_argv = ["tar", "-cf", "-", *seeded["files"]]
        for _ in range(args.rounds):
            elapsed, received, length = download(port, seeded["session"])
            wrong |= received != length
            kits.append(elapsed)
            tars.append(timed_shell(tar_argv, seeded["folder"], pipe_to_cat=True))
            tars_null.append(timed_shell(tar_argv, seeded["folder"], pipe_to_cat=False))
        rss = peak_rss_mib(workers)
        kit, tar = statistics.median(kits), statistics.median(tars)
        ratio = kit / tar
        print(f"load average after: {harness.load_average()}")
        print()
        print(f"kit: {length} bytes announced, {received} received")
        print(f"  rounds: kit {' '.join(f'{t:.2f}' for t in kits)} s; "
              f"tar | cat {' '.join(f'{t:.2f}' for t in tars)} s; "
              f"tar > /dev/null {' '.join(f'{t:.2f}' for t in tars_null)} s")  # fmt: skip
        print(f"  {'target':34} {'measured':>10} {'baseline':>10} {'ratio':>6}  target")
        print(f"  {'kit through gunicorn / tar | cat':34} {kit:>9.2f}s {tar:>9.2f}s "
              f"{ratio:>6.2f}  <= 1.3  {'PASS' if ratio <= 1.3 else 'FAIL'}")  # fmt: skip
        print(f"  {'web worker peak RSS (VmHWM; idle)':34} {rss:>8.1f}MB {idle_rss:>8.1f}MB "
              f"{'':>6}  < 150 MB  {'PASS' if rss < 150 else 'FAIL'}")  # fmt: skip
        print(f"  (tar > /dev/null, which reads nothing: {statistics.median(tars_null):.2f} s)")
        return 1 if wrong else 0
    finally:
        if web is not None:
            harness.stop(web)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--seed":
        sys.path.insert(0, str(harness.ROOT))
        import django

        django.setup()
        print(json.dumps(seed(int(sys.argv[2]))))
    else:
        sys.exit(main())
