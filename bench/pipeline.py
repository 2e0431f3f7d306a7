"""Benchmark of the upload + validation pipeline against baselines run on the same file.

Usage: `.venv/bin/python bench/pipeline.py [--size-mib 1100] [--keep]` (see bench/README.md).

1. Generate a build of at least --size-mib MiB (default 1100) in a temporary folder on disk
   (not tmpfs): a GNU tar with `versions/pristine/<id>/...` holding tens of thousands of
   files of mixed content (text, binary-like, already compressed), compressed as a
   multi-stream bzip2 by a thread pool, plus its `.md5` and a small `.contents` JSON.
2. Start a throwaway portal: a fresh PORTAL_DATA_DIR, `migrate`, an uploader with an API
   token, gunicorn (gthread, as portal/run.py starts it) on a free loopback port and a
   Celery worker (`-Q default,mothership --concurrency 1`).
3. Baseline (a): `cp` + `md5sum` of the build.
4. Measure (a): POST the three files to /api/builds/ with curl, timed until the reply.
   Steps 3 and 4 alternate for --rounds rounds (default 3) and the medians are compared;
   every round but the last uploads a decoy (the build with its first bytes broken), which
   the worker refuses at once, so only the last upload is validated.
5. Wait until the worker has validated and published the build; measure (b), the
   validation time, from the build's own audit events (validating -> valid).
6. Baseline (b): `bzip2 -t` of the build, the decompression floor.
7. (c): the peak RSS (VmHWM) of every web and Celery process, sampled throughout.
8. Print the table (measured, baseline, ratio, target, PASS/FAIL), stop everything and
   remove the temporary folder (unless --keep).

PASS/FAIL is information only: the exit status is 0 whenever the run completed, 1 when
something went wrong, 3 when the time limit was reached and 130 on Ctrl-C. The page cache
is dropped before each step that reads the build (when allowed; otherwise every such step
runs on a warm cache) so that a baseline and the step it is compared with start alike.
"""

from __future__ import annotations

import argparse
import bz2
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from portal.run import web_command  # noqa: E402 - needs the repository on sys.path

BENCH_DIR = REPO / "bench"
BIN = Path(sys.executable).parent
MIB = 1024 * 1024
MB = 1000 * 1000

# Targets from the issue.
UPLOAD_RATIO_TARGET = 1.5
VALIDATION_RATIO_TARGET = 0.6
RSS_LIMIT_BYTES = 150 * MB

# Tar bytes per bzip2 stream: big enough that the per-stream overhead is nil, small enough
# that both cores get work early and memory stays a few chunks deep.
COMPRESS_CHUNK = 8 * MIB
BZIP2_LEVEL = 9  # what `bzip2` uses by default, so what real builds use
PRISTINE_ID = "31337"
TARBALL_PREFIX = "xo-bench"
USERNAME = "bench-uploader"
RSS_SAMPLE_SECONDS = 0.2
STATUS_POLL_SECONDS = 1.0
DONE_STATUSES = {"published", "invalid", "publish_failed"}


class BenchError(Exception):
    """Something went wrong: the run cannot produce figures."""


class TimeLimitReached(BaseException):
    """Raised from SIGALRM; BaseException so no `except Exception` swallows it."""


# --- Build generation ---------------------------------------------------------------------


@dataclass
class GeneratedBuild:
    tarball: Path
    md5_file: Path
    contents: Path
    md5: str
    size: int
    tar_bytes: int
    members: int
    files: int
    streams: int
    seconds: float

    def save(self) -> None:
        """Beside the files, so `--reuse` can skip the slowest step of a rerun."""
        data = {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(self).items()
        }
        (self.tarball.parent / "build.json").write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, folder: Path) -> GeneratedBuild:
        data = json.loads((folder / "build.json").read_text())
        for key in ("tarball", "md5_file", "contents"):
            data[key] = folder / Path(data[key]).name
        build = cls(**data)
        if build.tarball.stat().st_size != build.size:
            raise BenchError(f"{build.tarball} is not the size build.json records")
        return build


class _CompressingSink:
    """The file object tarfile writes to: cuts the tar into chunks, compresses each one as
    its own bzip2 stream on a thread pool (bz2 releases the GIL) and writes the streams in
    order, hashing them on the way. Concatenated streams are a valid multi-stream bzip2."""

    def __init__(self, out, pool: ThreadPoolExecutor, depth: int):
        self.out = out
        self.pool = pool
        self.depth = depth
        self.buffer = bytearray()
        self.pending: deque[tuple[Future, int]] = deque()
        self.pending_in = 0
        self.consumed_in = 0
        self.written = 0
        self.tar_bytes = 0
        self.streams = 0
        self.md5 = hashlib.md5(usedforsecurity=False)

    def write(self, data) -> int:
        self.buffer += data
        self.tar_bytes += len(data)
        if len(self.buffer) >= COMPRESS_CHUNK:
            self._submit()
        return len(data)

    def estimate(self) -> float:
        """Compressed size once everything given so far is written."""
        ratio = self.written / self.consumed_in if self.consumed_in else 1.0
        return self.written + (self.pending_in + len(self.buffer)) * ratio

    def finish(self) -> None:
        if self.buffer:
            self._submit()
        self.drain()

    def drain(self) -> None:
        while self.pending:
            self._drain_one()

    def _submit(self) -> None:
        chunk = bytes(self.buffer)
        self.buffer.clear()
        self.pending.append((self.pool.submit(bz2.compress, chunk, BZIP2_LEVEL), len(chunk)))
        self.pending_in += len(chunk)
        # Bounded depth keeps memory flat and the estimate close to the truth.
        while len(self.pending) > self.depth:
            self._drain_one()

    def _drain_one(self) -> None:
        future, size = self.pending.popleft()
        data = future.result()
        self.out.write(data)
        self.md5.update(data)
        self.written += len(data)
        self.pending_in -= size
        self.consumed_in += size
        self.streams += 1


class _Content:
    """File bodies that look like an OS tree to bzip2: fresh random bytes (so compressed
    output piles up quickly and cannot be deduplicated across files), skewed for binaries
    and word salad for text."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        letters = "abcdefghijklmnopqrstuvwxyz_"
        words = ["".join(rng.choices(letters, k=rng.randint(2, 11))) for _ in range(6000)]
        lines = []
        size = 0
        while size < 8 * MIB:
            line = " ".join(rng.choices(words, k=rng.randint(3, 14))) + "\n"
            lines.append(line)
            size += len(line)
        self.corpus = "".join(lines).encode("ascii")
        # Seven bits of entropy per byte: compresses ~12%, like stripped machine code, and
        # is the cheapest content per compressed byte (bzip2 spends the generation time).
        self.seven_bits = bytes(b & 0x7F for b in range(256))

    def text(self, size: int) -> bytes:
        start = self.rng.randrange(0, len(self.corpus) - size)
        return self.corpus[start : start + size]

    def binary(self, size: int) -> bytes:
        return self.rng.randbytes(size).translate(self.seven_bits)

    def packed(self, size: int) -> bytes:
        return self.rng.randbytes(size)


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


# (kind, share of files, smallest, largest, extension): sizes are log-uniform, so most
# files are small, as in a real tree (~40k files per GiB).
FILE_KINDS = (
    ("text", 0.60, 100, 32 * 1024, "conf"),
    ("binary", 0.35, 1024, 256 * 1024, "so"),
    ("packed", 0.05, 8 * 1024, MIB, "gz"),
)
FILES_PER_DIR = 40


def generate_build(folder: Path, target_bytes: int, seed: int) -> GeneratedBuild:
    started = time.perf_counter()
    rng = random.Random(seed)
    content = _Content(rng)
    tarball = folder / f"{TARBALL_PREFIX}-tree.tar.bz2"
    workers = os.cpu_count() or 2
    root = f"versions/pristine/{PRISTINE_ID}"
    kinds = [kind for kind, *_ in FILE_KINDS]
    weights = [share for _, share, *_ in FILE_KINDS]
    limits = {kind: (low, high, ext) for kind, _, low, high, ext in FILE_KINDS}
    manifest_sample = []
    members = files = 0
    last_report = started

    def info(name, type_, size=0, mode=0o644, link=""):
        member = tarfile.TarInfo(name)
        member.type = type_
        member.size = size
        member.mode = mode
        member.mtime = 1_700_000_000
        member.uname = member.gname = "root"
        member.linkname = link
        return member

    with (
        open(tarball, "wb") as out,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        sink = _CompressingSink(out, pool, depth=2 * workers)
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            for name in ("versions", "versions/pristine", root):
                tar.addfile(info(name, tarfile.DIRTYPE, mode=0o755))
                members += 1
            folder_name = ""
            while True:
                if sink.estimate() >= target_bytes * 1.002:
                    # Only the streams still in the pool are estimated: wait for them and
                    # decide on what is really written, so the build is never short.
                    sink.drain()
                    if sink.estimate() >= target_bytes * 1.002:
                        break
                if files % FILES_PER_DIR == 0:
                    folder_name = f"{root}/usr/lib/pkg{files // FILES_PER_DIR:05d}"
                    tar.addfile(info(folder_name, tarfile.DIRTYPE, mode=0o755))
                    members += 1
                kind = rng.choices(kinds, weights)[0]
                low, high, ext = limits[kind]
                size = _log_uniform(rng, low, high)
                path = f"{folder_name}/{kind}{files:06d}.{ext}"
                body = getattr(content, kind)(size)
                tar.addfile(info(path, tarfile.REGTYPE, size), io.BytesIO(body))
                members += 1
                files += 1
                if len(manifest_sample) < 500:
                    manifest_sample.append([path, size, hashlib.sha256(body).hexdigest()])
                # Symbolic and hard links exist in real trees and take their own paths.
                if files % 50 == 0:
                    tar.addfile(info(f"{path}.link", tarfile.SYMTYPE, link=Path(path).name))
                    members += 1
                if files % 1000 == 0:
                    tar.addfile(info(f"{path}.hard", tarfile.LNKTYPE, link=path))
                    members += 1
                now = time.perf_counter()
                if now - last_report >= 15:
                    last_report = now
                    print(
                        f"  ... {sink.written / MIB:,.0f} of {target_bytes / MIB:,.0f} MiB "
                        f"compressed, {now - started:.0f} s",
                        flush=True,
                    )
        sink.finish()

    md5 = sink.md5.hexdigest()
    md5_file = folder / f"{tarball.name}.md5"
    md5_file.write_text(f"{md5}  {tarball.name}\n")
    contents = folder / f"{TARBALL_PREFIX}.contents"
    contents.write_text(
        json.dumps({"pristine": PRISTINE_ID, "files": files, "sample": manifest_sample})
    )
    return GeneratedBuild(
        tarball=tarball,
        md5_file=md5_file,
        contents=contents,
        md5=md5,
        size=tarball.stat().st_size,
        tar_bytes=sink.tar_bytes,
        members=members,
        files=files,
        streams=sink.streams,
        seconds=time.perf_counter() - started,
    )


# --- Process memory -----------------------------------------------------------------------


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


@dataclass
class RoleMemory:
    peak_hwm_kib: int = 0
    peak_sum_rss_kib: int = 0
    pids: set[int] = field(default_factory=set)


class RssSampler(threading.Thread):
    """Samples VmHWM (the kernel's own peak RSS) and VmRSS of every process under the web
    and worker roots. VmHWM misses nothing between samples; sampling only matters for a
    process that exits before the end, and for the summed RSS of a role."""

    def __init__(self, roots: dict[str, int]):
        super().__init__(name="rss-sampler", daemon=True)
        self.roots = roots
        self.roles: dict[str, RoleMemory] = {}
        self.lock = threading.Lock()
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(RSS_SAMPLE_SECONDS)

    def stop(self):
        self.halt.set()
        self.join(5)
        self.sample()

    def sample(self):
        children = _children_map()
        found: dict[str, list[int]] = {}
        for prefix, root in self.roots.items():
            found.setdefault(f"{prefix} main", []).append(root)
            stack = [(pid, 1) for pid in children.get(root, [])]
            while stack:
                pid, depth = stack.pop()
                role = f"{prefix} {'child' if depth == 1 else 'grandchild'}"
                found.setdefault(role, []).append(pid)
                stack.extend((kid, depth + 1) for kid in children.get(pid, []))
        with self.lock:
            for role, pids in found.items():
                memory = self.roles.setdefault(role, RoleMemory())
                total = 0
                for pid in pids:
                    hwm = _status_kib(pid, "VmHWM")
                    rss = _status_kib(pid, "VmRSS")
                    if hwm is None or rss is None:
                        continue
                    memory.pids.add(pid)
                    memory.peak_hwm_kib = max(memory.peak_hwm_kib, hwm)
                    total += rss
                memory.peak_sum_rss_kib = max(memory.peak_sum_rss_kib, total)

    def snapshot(self) -> dict[str, RoleMemory]:
        with self.lock:
            return {
                role: RoleMemory(m.peak_hwm_kib, m.peak_sum_rss_kib, set(m.pids))
                for role, m in self.roles.items()
            }


# --- The run ------------------------------------------------------------------------------


def _fmt_seconds(value: float) -> str:
    return f"{value:.2f} s"


def _fmt_mb(kib: int) -> str:
    return f"{kib * 1024 / MB:.1f} MB"


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp: Path | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.sampler: RssSampler | None = None
        self.deadline = time.monotonic() + args.time_limit
        self.can_drop_caches = False
        self.notes: list[str] = []
        self.load_before = ""
        self.completed = False

    # Helpers

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeLimitReached
        return left

    def run_cmd(self, argv, *, env=None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            argv,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=self.remaining(),
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout or "").strip()[-2000:]
            raise BenchError(f"{' '.join(map(str, argv))} exited {result.returncode}\n{detail}")
        return result

    def cold_cache(self, path: Path) -> None:
        """Before a measured step that reads `path`: drop the page cache or, when that is
        not allowed, make sure the file is fully cached (so every step runs warm)."""
        os.sync()
        if self.can_drop_caches:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            return
        with open(path, "rb") as fh:
            while fh.read(8 * MIB):
                pass

    def timed(self, argv) -> float:
        started = time.perf_counter()
        self.run_cmd(argv)
        return time.perf_counter() - started

    # Steps

    def setup(self):
        parent = self._temp_parent()
        self.tmp = Path(tempfile.mkdtemp(prefix="xo-bench-", dir=parent))
        # Source, decoy, the baseline's copy, the decoys' and the real upload in the store.
        need = self.args.size_mib * MIB * (self.args.rounds + 3) + 512 * MIB
        free = shutil.disk_usage(self.tmp).free
        if free < need:
            raise BenchError(
                f"{self.tmp} has {free / MIB:,.0f} MiB free; the run needs {need / MIB:,.0f}"
            )
        try:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            self.can_drop_caches = True
        except OSError as exc:
            self.notes.append(f"page cache not dropped ({exc.strerror}): every step ran warm")
        print(f"Working folder: {self.tmp}")
        print(
            "Page cache: dropped before each measured read"
            if self.can_drop_caches
            else "Page cache: cannot be dropped here; every measured step reads a warm cache"
        )

    def _temp_parent(self) -> Path:
        """A folder on the repository's disk and not in memory, so disk I/O is real."""
        if self.args.tmp_dir:
            return Path(self.args.tmp_dir)
        candidate = Path(tempfile.gettempdir())
        if candidate.stat().st_dev == REPO.stat().st_dev and _fs_type(candidate) not in {
            "tmpfs",
            "ramfs",
        }:
            return candidate
        return BENCH_DIR

    def generate(self) -> GeneratedBuild:
        if self.args.reuse:
            build = GeneratedBuild.load(Path(self.args.reuse).resolve())
            verb = "Reusing"
        else:
            print(f"\nGenerating a {self.args.size_mib:,} MiB build ...", flush=True)
            folder = self.tmp / "source"
            folder.mkdir()
            build = generate_build(folder, self.args.size_mib * MIB, self.args.seed)
            build.save()
            verb = "Generated"
        print(
            f"{verb} {build.tarball}: {build.size / MIB:,.1f} MiB compressed "
            f"({build.streams} bzip2 streams), {build.tar_bytes / MIB:,.1f} MiB of tar, "
            f"{build.members:,} members ({build.files:,} files) in {build.seconds:.1f} s",
            flush=True,
        )
        if build.size < 1024 * MIB:
            self.notes.append("the build is smaller than 1 GiB: not the issue's benchmark")
        return build

    def portal_env(self) -> dict[str, str]:
        data = self.tmp / "data"
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "portal.settings",
                "DJANGO_DEBUG": "false",
                "DJANGO_SECRET_KEY": "bench",
                "DJANGO_HTTPS": "false",
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
                "PORTAL_DATA_DIR": str(data),
                # Never publish anywhere real, and never run a hash command from the caller's
                # environment: explicitly set, so a local .env cannot fill them in.
                "PUPPETCONTENT_OS_DIR": str(data / "puppetcontent" / "os"),
                "CONTENTS_HASH_COMMAND": "",
                "MAX_BUILD_BYTES": str(max(8 * 1024 * MIB, self.args.size_mib * MIB * 2)),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def start_portal(self, env) -> tuple[str, str]:
        print("\nStarting the portal ...", flush=True)
        python = str(BIN / "python")
        self.run_cmd([python, "manage.py", "migrate", "--verbosity", "0"], env=env)
        self.run_cmd(
            [
                python,
                "manage.py",
                "shell",
                "-c",
                "from django.contrib.auth import get_user_model\n"
                "from django.contrib.auth.models import Group\n"
                f"user, _ = get_user_model().objects.get_or_create(username={USERNAME!r})\n"
                "user.groups.add(Group.objects.get(name='uploaders'))\n",
            ],
            env=env,
        )
        token = self.run_cmd(
            [python, "manage.py", "api_token", USERNAME, "--name", "bench"], env=env
        ).stdout.split()[-1]

        port = _free_port()
        # As portal/run.py starts them, on a loopback port of our own.
        web = web_command(str(BIN), f"127.0.0.1:{port}")
        worker = [
            str(BIN / "celery"),
            "-A",
            "portal",
            "worker",
            "-Q",
            "default,mothership",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
            "-n",
            f"bench-{secrets.token_hex(3)}@%h",
        ]
        for role, argv in (("web", web), ("worker", worker)):
            log = self.tmp / f"{role}.log"
            self.logs[role] = log
            with open(log, "wb") as fh:
                # Own session, so stopping the role's whole process group is exact.
                self.procs[role] = subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        base = f"http://127.0.0.1:{port}"
        self._wait_web(base, token)
        self._wait_worker()
        roots = {role: proc.pid for role, proc in self.procs.items()}
        self.sampler = RssSampler(roots)
        self.sampler.start()
        print(f"Portal up at {base} (gunicorn gthread 2x4, Celery worker concurrency 1)")
        return base, token

    def _check_alive(self):
        for role, proc in self.procs.items():
            if proc.poll() is not None:
                raise BenchError(
                    f"the {role} process exited with status {proc.returncode}\n"
                    + _tail(self.logs[role])
                )

    def _wait_web(self, base, token):
        until = time.monotonic() + min(60, self.remaining())
        while time.monotonic() < until:
            self._check_alive()
            try:
                api_get(f"{base}/api/builds/", token)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        raise BenchError("gunicorn did not answer within 60 s\n" + _tail(self.logs["web"]))

    def _wait_worker(self):
        until = time.monotonic() + min(60, self.remaining())
        while time.monotonic() < until:
            self._check_alive()
            if b" ready." in self.logs["worker"].read_bytes():
                return
            time.sleep(0.2)
        raise BenchError(
            "the Celery worker was not ready within 60 s\n" + _tail(self.logs["worker"])
        )

    def upload_rounds(self, build, base, token, name) -> tuple[list[float], list[float]]:
        """Each round times the baseline, then an upload of the same file; the medians are
        compared. Every round but the last uses a decoy: a copy of the build with its first
        bytes broken. The portal takes it exactly like the real one (same size, same
        streaming, hashing, writing, fsync and 201), then the worker refuses it at its first
        bytes, so repeating costs no validation time and the real upload, last, meets an
        idle worker. (A refused upload, e.g. a wrong .md5, would also time the deletion of
        the staged file, which on a disk mounted with `discard` is most of a second.)"""
        decoy = self._decoy(build) if self.args.rounds > 1 else None
        baselines, uploads = [], []
        for number in range(1, self.args.rounds + 1):
            last = number == self.args.rounds
            print(f"Round {number} of {self.args.rounds}{'' if last else ' (decoy)'}:", flush=True)
            source = build if last else decoy
            baselines.append(self.baseline_upload(source))
            upload_name = name if last else f"{name}-decoy{number}"
            uploads.append(self.upload(source, base, token, upload_name))
            if not last:
                self._wait_refused(base, token, upload_name)
        return baselines, uploads

    def _decoy(self, build: GeneratedBuild) -> GeneratedBuild:
        folder = self.tmp / "decoy"
        folder.mkdir()
        tarball = folder / build.tarball.name
        shutil.copyfile(build.tarball, tarball)
        with open(tarball, "r+b") as fh:
            fh.write(b"DECOY")
        md5 = self.run_cmd(["md5sum", str(tarball)]).stdout.split()[0]
        md5_file = folder / build.md5_file.name
        md5_file.write_text(f"{md5}  {tarball.name}\n")
        return dataclasses.replace(build, tarball=tarball, md5_file=md5_file, md5=md5)

    def _wait_refused(self, base, token, name):
        until = time.monotonic() + min(60, self.remaining())
        while time.monotonic() < until:
            self._check_alive()
            status = api_get(f"{base}/api/builds/{name}/", token)["status"]
            if status == "invalid":
                return
            if status in DONE_STATUSES:
                raise BenchError(f"the decoy {name} ended {status}, not invalid")
            time.sleep(0.2)
        raise BenchError(f"the worker did not refuse the decoy {name} within 60 s")

    def baseline_upload(self, build: GeneratedBuild) -> float:
        copy = self.tmp / "baseline-copy"
        self.cold_cache(build.tarball)
        started = time.perf_counter()
        self.run_cmd(["cp", str(build.tarball), str(copy)])
        output = self.run_cmd(["md5sum", str(copy)]).stdout
        seconds = time.perf_counter() - started
        copy.unlink()
        if output.split()[0] != build.md5:
            raise BenchError(f"md5sum of the copy disagrees: {output.strip()}")
        print(f"  baseline (a) cp + md5sum: {seconds:.2f} s", flush=True)
        return seconds

    def upload(self, build: GeneratedBuild, base: str, token: str, name: str) -> float:
        if self.args.chunked:
            return self.upload_chunked(build, base, token, name)
        response = self.tmp / "upload-response.json"
        self.cold_cache(build.tarball)
        started = time.perf_counter()
        result = self.run_cmd(
            [
                "curl",
                "--silent",
                "--show-error",
                "--output",
                str(response),
                "--write-out",
                "%{http_code}",
                "--header",
                f"Authorization: Token {token}",
                "--form",
                f"tarball=@{build.tarball}",
                "--form",
                f"md5=@{build.md5_file}",
                "--form",
                f"contents=@{build.contents}",
                "--form",
                f"name={name}",
                f"{base}/api/builds/",
            ]
        )
        seconds = time.perf_counter() - started
        body = response.read_text(errors="replace")
        status = result.stdout.strip()
        if status != "201":
            raise BenchError(f"upload answered HTTP {status}: {body[:2000]}")
        reply = json.loads(body)
        if reply.get("md5") != build.md5 or reply.get("size") != build.size:
            raise BenchError(f"the portal computed something else: {body[:2000]}")
        print(f"  upload (a) curl -> gunicorn: {seconds:.2f} s (HTTP 201)", flush=True)
        return seconds

    def upload_chunked(self, build: GeneratedBuild, base: str, token: str, name: str) -> float:
        """(a) as a build machine sends it resumably: `releases/client/xo-upload` (chunks of
        the portal's UPLOAD_CHUNK_BYTES, each with its sha256), then the build from it."""
        script = Path(__file__).resolve().parent.parent / "releases" / "client" / "xo-upload"
        self.cold_cache(build.tarball)
        started = time.perf_counter()
        self.run_cmd(
            [
                sys.executable,
                str(script),
                "--portal",
                base,
                "--name",
                name,
                str(build.tarball),
                str(build.md5_file),
                str(build.contents),
            ],
            env={**os.environ, "XO_PORTAL_TOKEN": token},
        )
        seconds = time.perf_counter() - started
        reply = api_get(f"{base}/api/builds/{name}/", token)
        if reply.get("md5") != build.md5 or reply.get("size") != build.size:
            raise BenchError(f"the portal computed something else: {json.dumps(reply)[:2000]}")
        print(f"  upload (a) xo-upload in chunks -> gunicorn: {seconds:.2f} s", flush=True)
        return seconds

    def wait_pipeline(self, base: str, token: str, name: str) -> dict:
        print("Waiting for validation and publication ...", flush=True)
        last_print = 0.0
        while True:
            self._check_alive()
            self.remaining()
            build = api_get(f"{base}/api/builds/{name}/", token)
            now = time.monotonic()
            if build["status"] in DONE_STATUSES:
                print(f"  ... {build['status']}", flush=True)
                if build["status"] != "published":
                    raise BenchError(
                        f"the build ended {build['status']}: {build.get('status_detail')}\n"
                        + _tail(self.logs["worker"])
                    )
                return build
            if now - last_print >= 15:
                last_print = now
                progress = build["progress"]
                share = progress["done"] / progress["total"] if progress["total"] else 0
                print(
                    f"  ... {build['status']} {progress['phase']} {share:.0%}",
                    flush=True,
                )
            time.sleep(STATUS_POLL_SECONDS)

    def audit_times(self, env, name: str) -> dict[str, float]:
        """The worker's own clock: seconds between the build's audited transitions."""
        code = (
            "import json\n"
            "from releases.models import AuditEvent, Build\n"
            f"build = Build.objects.get(name={name!r})\n"
            "events = [[e.action, e.from_status, e.to_status, e.at.isoformat()]\n"
            "          for e in AuditEvent.objects.filter(build=build).order_by('at', 'id')]\n"
            "print(json.dumps({'events': events, 'members': build.member_count,\n"
            "                  'unpacked': build.unpacked_size}))\n"
        )
        out = self.run_cmd([str(BIN / "python"), "manage.py", "shell", "-c", code], env=env)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        at: dict[str, datetime] = {}
        for action, _from, to, when in data["events"]:
            key = to or action
            at.setdefault(key, datetime.fromisoformat(when))
        missing = {"uploaded", "validating", "valid", "publishing", "published"} - set(at)
        if missing:
            raise BenchError(f"audit events missing: {sorted(missing)}: {data['events']}")

        def span(a, b):
            return (at[b] - at[a]).total_seconds()

        return {
            "queue_wait": span("uploaded", "validating"),
            "validation": span("validating", "valid"),
            "publication": span("publishing", "published"),
            "members": data["members"],
            "unpacked": data["unpacked"],
        }

    def baseline_validation(self, build: GeneratedBuild) -> float:
        self.cold_cache(build.tarball)
        print("Baseline (b) bzip2 -t ...", flush=True)
        seconds = self.timed(["bzip2", "-t", str(build.tarball)])
        print(f"Baseline (b) bzip2 -t: {seconds:.2f} s", flush=True)
        return seconds

    def run(self) -> None:
        overall = time.perf_counter()
        self.load_before = _load()
        self.setup()
        build = self.generate()
        env = self.portal_env()
        base, token = self.start_portal(env)
        idle = self.sampler.snapshot()
        name = f"bench-{secrets.token_hex(4)}"

        print(f"\nMeasuring on {build.size / MIB:,.1f} MiB ...", flush=True)
        cp_md5_samples, upload_samples = self.upload_rounds(build, base, token, name)
        cp_md5 = statistics.median(cp_md5_samples)
        upload = statistics.median(upload_samples)
        if self.args.upload_only:
            print(
                f"\n(a) upload / cp+md5sum, medians: {upload:.2f} s / {cp_md5:.2f} s = "
                f"{upload / cp_md5:.2f} (target <= {UPLOAD_RATIO_TARGET}); rounds: cp + md5sum "
                + ", ".join(f"{value:.2f}" for value in cp_md5_samples)
                + " s; upload "
                + ", ".join(f"{value:.2f}" for value in upload_samples)
                + f" s. Load average before / after: {self.load_before} / {_load()}"
            )
            self.completed = True
            return
        self.wait_pipeline(base, token, name)
        self.sampler.stop()
        memory = self.sampler.snapshot()
        times = self.audit_times(env, name)
        bzip2_t = self.baseline_validation(build)
        if times["members"] != build.members or times["unpacked"] != build.tar_bytes:
            raise BenchError(
                f"the portal saw {times['members']} members / {times['unpacked']} bytes, "
                f"the generator wrote {build.members} / {build.tar_bytes}"
            )
        self.report(build, cp_md5, upload, bzip2_t, times, idle, memory)
        print(
            "\nRounds of (a), in order: cp + md5sum "
            + ", ".join(f"{value:.2f}" for value in cp_md5_samples)
            + " s; upload "
            + ", ".join(f"{value:.2f}" for value in upload_samples)
            + " s (the ratio uses the medians)"
        )
        print(
            f"Load average before / after: {self.load_before} / {_load()} on "
            f"{os.cpu_count()} CPUs (other work on the machine skews every figure)"
        )
        print(f"Total bench time {time.perf_counter() - overall:.0f} s")
        self.completed = True

    def report(self, build, cp_md5, upload, bzip2_t, times, idle, memory):
        size_mib = build.size / MIB
        tar_mib = build.tar_bytes / MIB
        rows = []

        def ratio_row(label, measured, baseline, target):
            ratio = measured / baseline
            verdict = "PASS" if ratio <= target else "FAIL"
            rows.append(
                (
                    label,
                    _fmt_seconds(measured),
                    _fmt_seconds(baseline),
                    f"{ratio:.2f}",
                    f"<= {target}",
                    verdict,
                )
            )

        label = "(a) chunked upload / cp+md5sum" if self.args.chunked else "(a) upload / cp+md5sum"
        ratio_row(f"{label}, medians", upload, cp_md5, UPLOAD_RATIO_TARGET)
        ratio_row(
            "(b) validation / bzip2 -t", times["validation"], bzip2_t, VALIDATION_RATIO_TARGET
        )
        limit_kib = RSS_LIMIT_BYTES // 1024
        for label, prefix in (("web", "web"), ("Celery", "worker")):
            roles = {role: m for role, m in memory.items() if role.startswith(prefix + " ")}
            peak = max((m.peak_hwm_kib for m in roles.values()), default=0)
            rows.append(
                (
                    f"(c) {label} peak RSS (max VmHWM)",
                    _fmt_mb(peak),
                    "",
                    "",
                    f"< {RSS_LIMIT_BYTES // MB} MB",
                    "PASS" if 0 < peak < limit_kib else "FAIL",
                )
            )

        header = ("target", "measured", "baseline", "ratio", "target", "result")
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        print("\nResults")
        for row in [header, *rows]:
            cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
            print("  " + "  ".join(cells))

        print("\nSizes and throughput")
        print(
            f"  build: {size_mib:,.1f} MiB bzip2 ({build.streams} streams), "
            f"{tar_mib:,.1f} MiB tar, {build.members:,} members; "
            f"generated in {build.seconds:.1f} s"
        )
        for label, seconds, mib in (
            ("cp + md5sum", cp_md5, size_mib),
            ("upload (curl -> gunicorn -> disk, md5+sha256, fsync)", upload, size_mib),
            ("bzip2 -t", bzip2_t, size_mib),
            ("validation (validating -> valid)", times["validation"], size_mib),
        ):
            print(f"  {label}: {seconds:.2f} s, {mib / seconds:,.1f} MiB/s compressed")
        print(
            f"  validation unpacked: {tar_mib / times['validation']:,.1f} MiB/s of tar; "
            f"bzip2 -t: {tar_mib / bzip2_t:,.1f} MiB/s"
        )
        print(
            f"  queue wait (uploaded -> validating): {times['queue_wait']:.2f} s; "
            f"publication (publishing -> published, md5 re-read in place): "
            f"{times['publication']:.2f} s"
        )

        print("\nPeak memory per process role (VmHWM max over the role's processes)")
        for role in sorted(memory):
            m = memory[role]
            before = idle.get(role)
            idle_text = f", idle {_fmt_mb(before.peak_hwm_kib)}" if before else ""
            print(
                f"  {role:<18} {len(m.pids)} process(es): peak {_fmt_mb(m.peak_hwm_kib)}"
                f"{idle_text}; peak summed RSS {_fmt_mb(m.peak_sum_rss_kib)}"
            )
        for note in self.notes:
            print(f"Note: {note}")

    # Cleanup

    def cleanup(self) -> None:
        if self.sampler is not None:
            self.sampler.halt.set()
        # To the main process only: gunicorn and Celery then stop their own workers
        # (signalling the pool child directly makes Celery log an error). SIGTERM waits for
        # a running task, so an aborted run sends Celery SIGQUIT, which does not.
        for role, proc in self.procs.items():
            if proc.poll() is None:
                cold = role == "worker" and not self.completed
                proc.send_signal(signal.SIGQUIT if cold else signal.SIGTERM)
        for role, proc in self.procs.items():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f"The {role} process did not stop within 10 s; killing it.")
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=10)
            # Whatever is left in the role's group (a pool child orphaned by a kill).
            _signal_group(proc, signal.SIGKILL)
        if self.tmp is None:
            return
        if self.args.keep:
            print(f"Kept {self.tmp} (build, portal data, web.log, worker.log)")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def _fs_type(path: Path) -> str:
    best, kind = "", ""
    resolved = str(path.resolve())
    with open("/proc/mounts") as fh:
        for line in fh:
            parts = line.split()
            mount, fstype = parts[1], parts[2]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, fstype
    return kind


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(f"  | {line}" for line in text[-lines:])


def api_get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-mib",
        type=int,
        default=1100,
        help="compressed size of the generated build (default 1100 MiB)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the working folder (build, data, logs)"
    )
    parser.add_argument(
        "--time-limit",
        type=int,
        default=20 * 60,
        help="seconds after which everything is stopped (default 1200)",
    )
    parser.add_argument("--seed", type=int, default=801, help="seed of the generated content")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="how many times (a) and its baseline are measured; medians are compared (default 3)",
    )
    parser.add_argument(
        "--chunked",
        action="store_true",
        help="(a) sends the archive resumably in chunks with releases/client/xo-upload "
        "(UPLOAD_CHUNK_BYTES, 8 MiB by default) instead of one curl request",
    )
    parser.add_argument(
        "--upload-only",
        action="store_true",
        help="measure (a) only: no waiting for validation, no bzip2 -t",
    )
    parser.add_argument(
        "--reuse",
        metavar="DIR",
        help="use the build a --keep run generated (its source/ folder) instead of a new one",
    )
    parser.add_argument(
        "--tmp-dir",
        help="where to create the working folder (default: the system temporary folder when "
        "it is on the repository's disk and not in memory, else bench/)",
    )
    args = parser.parse_args(argv)
    if args.size_mib <= 0:
        parser.error("--size-mib must be positive")
    if args.rounds <= 0:
        parser.error("--rounds must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    bench = Bench(args)

    def on_alarm(*_args):
        raise TimeLimitReached

    def on_term(*_args):
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    # Also when started in the background, where the shell made SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Backs up the deadline checks: interrupts any blocking step, whatever it is doing.
    signal.alarm(args.time_limit)
    try:
        bench.run()
        return 0
    except TimeLimitReached:
        print(f"\nTime limit of {args.time_limit} s reached; stopping everything.")
        return 3
    except KeyboardInterrupt:
        print("\nInterrupted; stopping everything.")
        return 130
    except subprocess.TimeoutExpired:
        print(f"\nTime limit of {args.time_limit} s reached in a command; stopping everything.")
        return 3
    except (BenchError, OSError) as exc:
        print(f"\nERROR: {exc}")
        return 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
