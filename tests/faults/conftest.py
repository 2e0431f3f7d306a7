"""Helpers for fault tests: real processes, real mounts, every loop bounded in time and count.

- `step_until` runs a worker in short slices (SIGCONT … SIGSTOP) and looks at the database and
  the disk only while it is stopped, so what a check sees is still true when it is acted on;
- `PuppetWatcher` polls the puppet content folder from a thread and records every file it ever
  saw under a final name with incomplete content;
- `tmpfs` mounts a small tmpfs (we run as root) and always unmounts it.
"""

import contextlib
import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest


def wait_for(predicate, *, timeout=60.0, interval=0.1, what="the condition"):
    """Poll `predicate` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    pytest.fail(f"{what} did not happen within {timeout} s")


def _stopped(pid: int) -> bool:
    """Every thread of `pid` is stopped (or the process is gone)."""
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                # The state follows the command name, which is in parentheses.
                if f.read().rsplit(")", 1)[1].split()[0] not in ("T", "t", "Z", "X"):
                    return False
    except FileNotFoundError:
        return True
    return True


def _stop(proc) -> None:
    os.kill(proc.pid, signal.SIGSTOP)
    wait_for(lambda: _stopped(proc.pid), timeout=5, interval=0.001, what="stopping the worker")


def step_until(proc, condition, *, run_for=0.003, pause=0.02, timeout=90.0, what="the state"):
    """Let `proc` run `run_for` seconds at a time until `condition()` holds, checking only while
    it is stopped. Returns with the process stopped, in the state the condition saw."""
    _stop(proc)
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / (run_for + pause)) + 1):
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"the worker exited before {what}")
        if time.monotonic() > deadline:
            break
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(run_for)
        _stop(proc)
        time.sleep(pause)
    os.kill(proc.pid, signal.SIGCONT)
    pytest.fail(f"the worker never reached {what} within {timeout} s")


def kill_hard(proc) -> None:
    """SIGKILL (works on a stopped process too) and reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


class PuppetWatcher(threading.Thread):
    """Polls `folder` until stopped (at most `timeout` seconds) and records every violation:
    a final name whose content is not exactly what it must be, an unexpected final name, or
    `.name` visible before the other three files are. Temporary names (leading dot) are
    skipped: school servers never look at them."""

    def __init__(self, folder: Path, expected: dict[str, bytes], *, timeout=300.0):
        super().__init__(daemon=True)
        self.folder = Path(folder)
        self.expected = {
            name: (len(data), hashlib.md5(data).digest()) for name, data in expected.items()
        }
        self.name_file = next(name for name in expected if name.endswith(".name"))
        self.timeout = timeout
        self.stopping = threading.Event()
        self.violations: list[str] = []
        self.polls = 0
        self.sightings: set[str] = set()
        self._checked: dict[tuple, bool] = {}

    def run(self):
        deadline = time.monotonic() + self.timeout
        while not self.stopping.is_set() and time.monotonic() < deadline:
            self.poll()
            self.polls += 1
            time.sleep(0.002)

    def poll(self):
        try:
            names = [n for n in os.listdir(self.folder) if not n.startswith(".")]
        except FileNotFoundError:
            return
        for name in names:
            if name not in self.expected:
                self.violations.append(f"unexpected file {name}")
                continue
            if not self._complete(name):
                self.violations.append(f"{name} visible while incomplete")
            self.sightings.add(name)
        if self.name_file in names:
            missing = set(self.expected) - set(names)
            if missing:
                self.violations.append(f"{self.name_file} visible before {sorted(missing)}")

    def _complete(self, name) -> bool:
        size, digest = self.expected[name]
        try:
            with open(self.folder / name, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_size != size:
                    return False
                key = (name, st.st_ino, st.st_size, st.st_mtime_ns)
                if key not in self._checked:
                    self._checked[key] = hashlib.md5(f.read()).digest() == digest
                return self._checked[key]
        except FileNotFoundError:
            return True  # removed between the listing and the open: nothing was read

    def stop(self) -> list[str]:
        self.stopping.set()
        self.join(timeout=10)
        self.poll()
        return self.violations


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs("name", size="8m")` mounts a fresh tmpfs; all are unmounted at the end, even when
    the test failed. Mounting needs root, which CI has: say so clearly if it is refused."""
    mounted = []

    def mount(name, size="8m"):
        target = tmp_path / name
        target.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            pytest.fail(
                f"cannot mount a tmpfs at {target} (these tests need root, as in CI): "
                f"{result.stderr.strip()}"
            )
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["umount", "-l", str(target)], timeout=30, check=False)


def fill(folder: Path, *, leave: int) -> Path:
    """Fill the filesystem of `folder` until at most `leave` bytes are free."""
    path = folder / "filler"
    chunk = b"\0" * (64 * 1024)
    with open(path, "wb") as f:
        for _ in range(1_000_000):
            free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
            if free <= leave:
                break
            try:
                f.write(chunk[: max(1, min(len(chunk), free - leave))])
                f.flush()
            except OSError:
                break
    return path
