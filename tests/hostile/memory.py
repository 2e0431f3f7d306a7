"""Peak memory of the code a worker runs, and of every program it starts, each call measured
in a fresh process of its own.

The child sets Django up as a worker or gunicorn would (so its baseline is theirs), then forks
once per call. The fork resets the kernel's peak-RSS mark (writing 5 to /proc/self/clear_refs),
runs the call and reads its own peak (VmHWM): the worker's number. What the call started is
measured by the kernel as it is reaped: `getrusage(RUSAGE_CHILDREN).ru_maxrss` is the largest
peak of any descendant waited for (fakeroot's script, the unpack session, tar, the
decompressor), and the fork is a child subreaper, so fakeroot's daemon `faked`, which leaves
its parent, comes back to it to be reaped and measured too. A fresh fork per call keeps each
call's children apart: that figure only ever grows within one process.

One caveat when reading the children's figures: Python starts a program with fork() then
exec(), and ru_maxrss counts what the forked copy had resident before the exec (pages it
shares with its parent, copy-on-write, costing nothing), so a program's figure is never below
the RSS of the Python that started it. tar and the decompressor are started by the unpack
session (a bare `python3 -I -S`): about 10 MB is their floor whatever they do. fakeroot's
script is started by the worker itself, so the largest child's figure is never below the
worker's own RSS at that moment: it bounds every program from above, it does not measure one.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import ctypes, importlib, json, os, resource, signal, sys, time
import django
django.setup()
from releases.reasons import Refused

PR_SET_CHILD_SUBREAPER = 36


def peak():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024


def name_of(pid):
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def still_running():
    mine = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == os.getpid():
                mine.append(int(entry))
    return mine


def reap(tools, seconds):
    # Reap the children that end within `seconds`, noting each one's peak under its name;
    # return the ones still running then.
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return []
        if found is None:
            if time.monotonic() >= deadline:
                return still_running()
            time.sleep(0.02)
            continue
        name = name_of(found.si_pid)
        _pid, _status, usage = os.wait4(found.si_pid, 0)
        tools[name] = max(tools.get(name, 0), usage.ru_maxrss * 1024)


def reap_orphans(tools):
    # What the call left behind comes back to this subreaper: faked, which fakeroot's script
    # stops as it exits, or a session killed before it ended. Whatever still runs after a
    # few seconds is named, stopped and measured too.
    left = reap(tools, 5)
    names = [name_of(pid) for pid in left]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            os.kill(pid, sig)
        left = reap(tools, 5)
    return names


def measure(target, args, kwargs):
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    module, name = target.split(":")
    function = getattr(importlib.import_module(module), name)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    tools = {}
    try:
        result = function(*args, **kwargs)
        outcome = "ok"
        tools.update(getattr(result, "peak_rss", None) or {})
    except Refused as rejection:
        outcome = rejection.code
    except Exception as error:
        outcome = f"{type(error).__name__}: {str(error)[-300:]}"
    worker = peak()
    left = reap_orphans(tools)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return [outcome, worker, children, tools, left]


results = []
for call in json.load(sys.stdin):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            row = measure(*call)
        except BaseException as error:
            row = [f"measurement failed: {error!r}", 0, 0, {}, []]
        with os.fdopen(write, "w") as fh:
            json.dump(row, fh)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        results.append(json.load(fh))
    os.waitpid(pid, 0)
json.dump(results, sys.stdout)
"""


def peak_rss(calls: list[tuple[str, list, dict]], data_dir: Path, *, timeout: float = 3600):
    """Run each `("module:function", args, kwargs)`; return for each `(outcome, worker peak,
    largest child's peak, {program: peak})`, in bytes. The programs are those the call's
    result names (`ArchiveScan.peak_rss`: tar and the decompressor) and faked."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="portal.settings", PORTAL_DATA_DIR=str(data_dir))
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [tuple(row) for row in json.loads(result.stdout)]
