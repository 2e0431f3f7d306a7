"""A school server ("XS") unpacking a published build, emulated with the real tools.

An XSCE school server (xs-rsync's `xs-publish-xobuild` and `xs-unpack-xobuild`) receives a
build tarball and its `.md5`, checks it with `md5sum --status -c`, and unpacks it as the
unprivileged xs-rsync user under `fakeroot -i STATE -s STATE` into a fresh `mktemp -d`:

    .tar.bz2    tar -C TMP --numeric-owner -xpjf FILE
    .tar.lzma   lzma -cd FILE | tar -C TMP --numeric-owner -xp
    .tar.xz     xz -cd FILE | tar -C TMP --numeric-owner -xp

If `TMP/versions/pristine` exists, the first line of `ls TMP/versions/pristine | sort` names
the build's root, which is moved into place with `mv -T` if `[ -d ]` says it is a directory;
otherwise `TMP/versions` is removed and TMP itself is served.

`unpack()` does the same with the same programs (never Python's tarfile) and reports the tree
the server would serve, read back through the saved fakeroot state as the server's rsync would
see it. It is stricter than the real script, which has no `pipefail`: a failing decompressor
fails the unpack too (`lenient_ok` tells what the real script would have done).

How it runs, and where it differs on purpose:

- Everything runs as `nobody` when this process is root (a root process ignores permissions
  that matter to the real, unprivileged server). The privilege drop happens in the forked
  child before exec (subprocess's user/group/extra_groups), never through a program that
  libfakeroot is preloaded into: libfakeroot fakes set*uid, so `setpriv`/`runuser` run under
  fakeroot would silently stay root.
- fakeroot(1) is a small shell script that starts `faked`, runs the command with libfakeroot
  preloaded and, because of `-s`, then polls `kill` in 0.1 s steps until faked is gone (and
  where orphans are reaped late, as in some containers, for over a second). This module reads
  faked's path, library and search path out of that script and runs faked itself in the
  foreground as a direct child (`faked --foreground --load --save-file STATE < STATE`), which
  is what the script does, minus the polling.
- There are two fakeroot sessions sharing one state file: the first runs mktemp and the unpack
  pipeline; the second (loaded from the state the first saved) makes the pristine decision,
  runs `rm -fr` or `mv -T`, and walks the served tree with a small stdlib-only Python script.
- The archive reaches the first program on stdin (the server user could not open pytest's
  0700 tmp_path), so `tar -xpj -f -` stands in for `tar -xpjf FILE`.
- If the entry that would be moved into place is a symlink, or resolves outside the temp
  folder (`versions/pristine` or its entry pointing at `/`, say), nothing is moved: the unpack
  is reported as failed. The real server would move whatever the path named.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import grp
import os
import pwd
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT = 60.0
SERVER_USER = "nobody"
SERVER_GROUPS = ("nogroup", "nobody")
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Most of each program's stderr kept (a hostile archive can make tar complain a lot).
STDERR_LIMIT = 64 * 1024

# name suffix -> (decompressor run before tar, or None for tar's own -j; tar's flags)
FORMATS = {
    ".tar.bz2": (None, "-xpj"),
    ".tar.lzma": ("lzma", "-xp"),
    ".tar.xz": ("xz", "-xp"),
}
REQUIRED_TOOLS = (
    "fakeroot",
    "tar",
    "bzip2",
    "xz",
    "lzma",
    "mktemp",
    "mv",
    "rm",
    "md5sum",
)


class SchoolServerUnavailable(RuntimeError):
    """A program the emulated school server needs is missing or unusable."""


@dataclass(frozen=True)
class Entry:
    """One path of the served tree, as stat() reports it inside the saved fakeroot state."""

    type: str  # 'f' regular, 'd' dir, 'l' symlink, 'c'/'b' device, 'p' fifo, 's' socket
    mode: int  # stat.S_IMODE: permission bits with setuid, setgid and sticky
    size: int = 0  # regular files only
    sha256: str = ""  # regular files only
    link: str = ""  # symlink target, exactly as stored
    ino: int = 0  # equal ino = hard links of each other
    nlink: int = 1
    uid: int = 0  # owner as tar set it (--numeric-owner) and fakeroot recorded it
    gid: int = 0
    devmajor: int = 0
    devminor: int = 0
    error: str = ""  # could not be read as the server user (e.g. a 0000-mode file)


@dataclass(frozen=True)
class Unpacked:
    ok: bool
    problem: str  # "" when ok
    served: str  # "versions/pristine/<id>", or "" when the archive root is served
    tree: dict[str, Entry] = field(default_factory=dict)  # "." is the served root
    failed_tool: str = ""  # 'tar', 'bzip2' (tar's child), 'lzma', 'xz', 'mv', ...
    stderr: str = ""  # what the failed tool printed
    # Whether the real script, which has no pipefail, would have got past the unpack: it
    # only sees tar's exit status, so it carries on when just the decompressor failed.
    lenient_ok: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class Comparison:
    differences: list[str]
    # Served directories without a manifest row of their own: parents tar created itself
    # (with default modes), or the served root. Not differences.
    implicit_dirs: list[str]


# --- Setup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setup:
    faked: str
    preload: str
    library_path: str
    faked_mode: str
    python: str
    # Process arguments that make a child the server user (empty when not root).
    drop: dict


def check_tools() -> None:
    """Raise SchoolServerUnavailable, saying what is missing, unless unpack() can run."""
    _setup()


@functools.cache
def _setup() -> _Setup:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool, path=SEARCH_PATH) is None]
    if missing:
        raise SchoolServerUnavailable(
            "the school server emulator needs these programs, which are not installed: "
            + ", ".join(missing)
            + " (Debian packages: fakeroot, tar, bzip2, xz-utils, coreutils)"
        )
    drop: dict = {}
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(SERVER_USER)
        except KeyError as exc:
            raise SchoolServerUnavailable(f"running as root needs a {SERVER_USER!r} user") from exc
        gid = user.pw_gid
        for name in SERVER_GROUPS:
            with contextlib.suppress(KeyError):
                gid = grp.getgrnam(name).gr_gid
                break
        drop = {"user": user.pw_uid, "group": gid, "extra_groups": []}
    faked, preload, library_path, faked_mode = _read_fakeroot_script()
    return _Setup(faked, preload, library_path, faked_mode, _find_python(drop), drop)


def _read_fakeroot_script() -> tuple[str, str, str, str]:
    """faked, LD_PRELOAD, LD_LIBRARY_PATH and FAKED_MODE, as the fakeroot script sets them."""
    script = os.path.realpath(shutil.which("fakeroot", path=SEARCH_PATH))
    try:
        text = Path(script).read_text(errors="replace")
    except OSError as exc:
        raise SchoolServerUnavailable(f"cannot read the fakeroot script {script}: {exc}") from exc
    values: dict[str, str] = {}
    for match in re.finditer(r"^([A-Z_]+)=(.*)$", text, re.MULTILINE):
        name, value = match.groups()
        if name in values:
            continue
        value = value.strip().strip("\"'")
        values[name] = re.sub(r"\$\{(\w+)\}", lambda m: values.get(m[1], ""), value)
    needed = ("FAKED", "FAKEROOT_LIB", "PATHS")
    if any(not values.get(name) for name in needed):
        raise SchoolServerUnavailable(
            f"{script} does not look like fakeroot's script (no {', '.join(needed)} settings)"
        )
    faked, lib, paths = values["FAKED"], values["FAKEROOT_LIB"], values["PATHS"]
    if not os.access(faked, os.X_OK):
        raise SchoolServerUnavailable(f"fakeroot's daemon {faked} is missing")
    if not any(os.path.exists(os.path.join(d, lib)) for d in paths.split(":") if d):
        raise SchoolServerUnavailable(f"fakeroot's library {lib} is not in {paths}")
    return faked, lib, paths, values.get("FAKED_MODE", "unknown-is-root")


def _find_python(drop: dict) -> str:
    """An interpreter the server user can run (a root-only pyenv/venv one would not do)."""
    candidates = [
        "/usr/bin/python3",
        shutil.which("python3", path=SEARCH_PATH),
        os.path.realpath(sys.executable),
    ]
    tried = []
    for python in dict.fromkeys(c for c in candidates if c):
        tried.append(python)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            probe = subprocess.run(
                [python, "-I", "-S", "-c", "import hashlib, stat"],
                env={"PATH": SEARCH_PATH, "LC_ALL": "C"},
                cwd="/",
                capture_output=True,
                timeout=30,
                **drop,
            )
            if probe.returncode == 0:
                return python
    who = f"the {SERVER_USER} user" if drop else "this user"
    raise SchoolServerUnavailable(f"no Python that {who} can run among {', '.join(tried)}")


# --- Checking the tarball ------------------------------------------------------------------


def md5_check(folder: Path, tarball_name: str) -> bool:
    """What the publisher checks first: `md5sum --status -c <name>.md5` in the folder."""
    result = subprocess.run(
        ["md5sum", "--status", "-c", f"{tarball_name}.md5"],
        cwd=folder,
        env={"PATH": SEARCH_PATH, "LC_ALL": "C"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT,
    )
    return result.returncode == 0


# --- Unpacking -----------------------------------------------------------------------------


def unpack(archive: Path, *, name: str | None = None, timeout: float = TIMEOUT) -> Unpacked:
    """Unpack `archive` (a build tarball called `name`, by default its own file name) as a
    school server does, and report what it would serve. Temp folders are always removed."""
    setup = _setup()
    start = time.monotonic()
    name = name if name is not None else Path(archive).name
    suffix = next((s for s in FORMATS if name.endswith(s)), None)
    if suffix is None:
        return Unpacked(False, "unknown file format", "", seconds=time.monotonic() - start)
    # Ours, so the server user cannot swap what is in it; `work` inside is the user's.
    base = Path(tempfile.mkdtemp(prefix="xs-unpack-"))
    try:
        os.chmod(base, 0o711)  # noqa: S103 - traverse only, for the server user
        work = base / "work"
        work.mkdir(0o700)
        if setup.drop:
            _check_reachable(base, setup.drop)
            os.chown(work, setup.drop["user"], setup.drop["group"])
        with open(archive, "rb") as fh:
            result = _Run(setup, work, start + timeout).run(fh, suffix)
    finally:
        _remove(base)
    return _with_seconds(result, time.monotonic() - start)


def _check_reachable(base: Path, drop: dict):
    """The server user must be able to get through every folder above its work folder."""
    for folder in base.parents:
        st = os.stat(folder)
        if st.st_uid == drop["user"]:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == drop["group"]:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            raise SchoolServerUnavailable(
                f"the {SERVER_USER} user cannot get through {folder} to the temp folder; "
                "point TMPDIR at a folder it can reach, such as /tmp"
            )


def _with_seconds(result: Unpacked, seconds: float) -> Unpacked:
    return dataclasses.replace(result, seconds=seconds)


class _Timeout(Exception):
    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class _Run:
    """One unpack, in `work`: a folder of the server user's own (but not its parent)."""

    def __init__(self, setup: _Setup, work: Path, deadline: float):
        self.setup = setup
        self.work = work
        self.deadline = deadline
        self.state = work / "fakeroot.state"
        self.dest = work / "served"
        self.owner = -1  # of the state file, once made
        self.procs: list[subprocess.Popen] = []

    def run(self, archive, suffix: str) -> Unpacked:
        try:
            return self._run(archive, suffix)
        except _Timeout as exc:
            return Unpacked(False, f"timed out while running {exc.what}", "", failed_tool=exc.what)
        finally:
            self._kill_all()

    def _run(self, archive, suffix: str) -> Unpacked:
        # fakeroot -i needs the file to exist (its script warns and loads nothing otherwise).
        fd = os.open(self.state, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        if self.setup.drop:
            os.fchown(fd, self.setup.drop["user"], self.setup.drop["group"])
        os.close(fd)
        self.owner = os.stat(self.state).st_uid

        with self._fakeroot() as env:
            made = self._call(["mktemp", "-d", "-p", str(self.work)], env, "mktemp")
            if made.returncode:
                return self._failed("mktemp", made.returncode, made.stderr)
            tmp = made.stdout.decode().strip()
            if os.path.dirname(tmp) != str(self.work):
                return Unpacked(False, f"mktemp made {tmp!r}, not in {self.work}", "")
            failures = self._pipeline(archive, suffix, tmp, env)
        if failures:
            # Without pipefail the real script only sees tar's exit status.
            tar_ok = not any(tool in ("tar", "bzip2") for tool, _, _ in failures)
            return _failure(failures, lenient_ok=tar_ok)

        with self._fakeroot() as env:
            walked = self._call(
                [self.setup.python, "-I", "-S", "-c", _HELPER, tmp, str(self.dest)],
                env,
                "the pristine decision and walk",
            )
        return _helper_result(walked)

    # fakeroot sessions

    @contextlib.contextmanager
    def _fakeroot(self):
        """One `fakeroot -i STATE -s STATE` session: yields the environment its commands get."""
        with self._open_state() as saved:
            faked = self._popen(
                [self.setup.faked, "--foreground", "--load", "--save-file", str(self.state)],
                stdin=saved,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=self._env(),
            )
        try:
            key = self._faked_key(faked)
            env = self._env(
                FAKEROOTKEY=key,
                LD_LIBRARY_PATH=self.setup.library_path,
                LD_PRELOAD=self.setup.preload,
            )
            yield env
            # libfakeroot sends chmod/chown/mknod to faked without waiting for an answer, so
            # some may still be queued when the last command exits; a stat() waits for its
            # answer, and faked answers in order. The fakeroot script does the same before
            # it stops faked with -s (`ls -l /` under the library). Without it a file's last
            # chmod was lost once: the differential test saw 0600 where tar had set 0644.
            self._call(["stat", "-c", "%a", str(self.work)], env, "stat")
        finally:
            # faked saves the state and removes its message queues on SIGTERM.
            faked.terminate()
            try:
                faked.wait(max(0.1, self.deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise _Timeout("faked") from None
            finally:
                faked.stdout.close()
        if faked.returncode:
            raise RuntimeError(f"faked exited with status {faked.returncode}")

    def _open_state(self):
        """The saved state, for faked's stdin: the file the server user's faked wrote, never
        something a process of that user put in its place."""
        fd = os.open(self.state, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        saved = os.fdopen(fd, "rb")
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != self.owner:
            saved.close()
            raise RuntimeError(f"{self.state} is no longer the fakeroot state file")
        return saved

    def _faked_key(self, faked: subprocess.Popen) -> str:
        ready, _, _ = select.select([faked.stdout], [], [], self._left("faked"))
        line = faked.stdout.readline().decode() if ready else ""
        key = line.split(":")[0].strip()
        if not key.isdigit():
            if not ready:
                raise _Timeout("faked")
            raise RuntimeError(f"faked did not say its key (it said {line!r})")
        return key

    def _env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": SEARCH_PATH,
            "LC_ALL": "C",
            "HOME": str(self.work),
            "TMPDIR": str(self.work),
            "FAKED_MODE": self.setup.faked_mode,
        }
        env.update(extra)
        return env

    # processes

    def _popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(
            argv,
            cwd=self.work,
            umask=0o022,
            start_new_session=True,
            close_fds=True,
            **self.setup.drop,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def _call(self, argv: list[str], env: dict, what: str) -> subprocess.CompletedProcess:
        proc = self._popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = proc.communicate(timeout=self._left(what))
        except subprocess.TimeoutExpired:
            raise _Timeout(what) from None
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def _pipeline(self, archive, suffix: str, tmp: str, env: dict) -> list[tuple[str, int, str]]:
        """Run decompressor | tar; return (tool, exit status, stderr) of each that failed."""
        decompressor, flags = FORMATS[suffix]
        tar = ["tar", "-C", tmp, "--numeric-owner", flags, "-f", "-"]
        stages: list[tuple[str, subprocess.Popen, object]] = []
        with contextlib.ExitStack() as stack:
            if decompressor is None:
                tar_in = archive
            else:
                err = stack.enter_context(tempfile.TemporaryFile())
                first = self._popen(
                    [decompressor, "-cd"],
                    env=env,
                    stdin=archive,
                    stdout=subprocess.PIPE,
                    stderr=err,
                )
                stages.append((decompressor, first, err))
                tar_in = first.stdout
            err = stack.enter_context(tempfile.TemporaryFile())
            last = self._popen(tar, env=env, stdin=tar_in, stdout=subprocess.DEVNULL, stderr=err)
            stages.append(("tar", last, err))
            if decompressor is not None:
                stages[0][1].stdout.close()  # only tar holds the pipe now
            for tool, proc, _ in stages:
                try:
                    proc.wait(self._left(tool))
                except subprocess.TimeoutExpired:
                    raise _Timeout(tool) from None
            failures = []
            for tool, proc, err in stages:
                if proc.returncode:
                    err.seek(0)
                    text = err.read(STDERR_LIMIT).decode("utf-8", "replace")
                    if tool == "tar" and decompressor is None and "Child returned status" in text:
                        tool = "bzip2"  # tar -j runs bzip2 and says when it failed
                    failures.append((tool, proc.returncode, text))
        return failures

    def _left(self, what: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Timeout(what)
        return left

    def _kill_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    def _failed(self, tool: str, status: int, stderr: bytes) -> Unpacked:
        return _failure([(tool, status, stderr.decode("utf-8", "replace"))], lenient_ok=False)


def _describe_status(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-status).name}"
        return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _failure(failures: list[tuple[str, int, str]], *, lenient_ok: bool) -> Unpacked:
    parts = [f"{tool} {_describe_status(status)}: {err.strip()}" for tool, status, err in failures]
    # A decompressor killed by SIGPIPE only shows that tar stopped reading; tar says why.
    blamed = next((f for f in failures if f[1] != -signal.SIGPIPE), failures[0])
    return Unpacked(
        False,
        "; ".join(parts),
        "",
        failed_tool=blamed[0],
        stderr=blamed[2],
        lenient_ok=lenient_ok,
    )


def _helper_result(done: subprocess.CompletedProcess) -> Unpacked:
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    if done.returncode or not lines:
        err = done.stderr.decode("utf-8", "replace")
        return Unpacked(
            False,
            f"the school server's walk {_describe_status(done.returncode)}: {err.strip()}",
            "",
            failed_tool="python",
            stderr=err,
        )
    head = ast.literal_eval(lines[0])
    if head["problem"]:
        return Unpacked(
            False,
            head["problem"],
            head["served"],
            failed_tool=head["tool"],
            stderr=head["stderr"],
        )
    tree = {}
    for line in lines[1:]:
        row = ast.literal_eval(line)
        path = row.pop("path")
        tree[path] = Entry(**row)
    return Unpacked(True, "", head["served"], tree, lenient_ok=True)


def _remove(base: Path):
    """Remove a temp folder whatever modes the tools left in it."""

    def allow(function, path, _exc_info):
        # Only an unprivileged run can be refused; root is never (and must not chmod paths
        # of a hostile tree, which follows symlinks).
        if os.geteuid() != 0:
            with contextlib.suppress(OSError):
                os.chmod(os.path.dirname(path), 0o700)
        with contextlib.suppress(FileNotFoundError):
            function(path)

    if sys.version_info >= (3, 12):
        shutil.rmtree(base, onexc=allow)
    else:
        shutil.rmtree(base, onerror=allow)


# Runs as the server user inside the second fakeroot session, so stat() answers from the
# state the unpack saved. It imports as little as it can (json and subprocess would triple its
# start-up time) and prints the ascii() of one dict about the decision and move, then of one
# dict per served path.
_HELPER = r"""
import hashlib, os, stat, sys


def run(argv):
    read, write = os.pipe()
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, write, 2),
    ]
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return status, b"".join(chunks).decode("utf-8", "replace")


def first_line_of_ls_sorted(path):
    # `ls PATH | sort`, first line: a directory lists its non-dot names (a name may span
    # several lines); any other operand is printed as given; a failing ls prints nothing.
    if not os.path.isdir(path):
        return path
    try:
        names = os.listdir(path)
    except OSError:
        return ""
    lines = [line for name in names if not name.startswith(".") for line in name.split("\n")]
    return min(lines, key=os.fsencode) if lines else ""


def unsafe(tmp, candidate):
    root = os.path.realpath(tmp)
    folder = os.path.realpath(os.path.dirname(candidate))
    if folder != root and not folder.startswith(root + os.sep):
        return "versions/pristine resolves to %r, outside the temp folder" % folder
    if os.path.islink(candidate):
        return "it is a symlink to %r" % os.readlink(candidate)
    real = os.path.realpath(candidate)
    if not real.startswith(root + os.sep):
        return "it resolves to %r, outside the temp folder" % real
    if not stat.S_ISDIR(os.lstat(real).st_mode):
        return "it resolves to %r, which is not a directory" % real
    return ""


def move(source, dest):
    status, err = run(["mv", "-T", source, dest])
    if status:
        return ("mv -T exited with status %d: %s" % (status, err.strip()), "mv", err)
    return None


def decide(tmp, dest):
    versions = os.path.join(tmp, "versions")
    pristine = os.path.join(versions, "pristine")
    pri = first_line_of_ls_sorted(pristine) if os.path.exists(pristine) else ""
    if pri and os.path.isdir(pristine + "/" + pri):
        served = "versions/pristine/" + pri
        why = unsafe(tmp, pristine + "/" + pri)
        if why:
            problem = "served entry %s is not a real directory inside the temp folder: %s"
            return served, (problem % (served, why), "", "")
        return served, move(pristine + "/" + pri, dest)
    status, err = run(["rm", "-fr", versions])
    if status:
        return "", ("rm -fr exited with status %d: %s" % (status, err.strip()), "rm", err)
    return "", move(tmp, dest)


DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def sha256(name, dir_fd):
    digest = hashlib.sha256()
    with os.fdopen(os.open(name, FILE, dir_fd=dir_fd), "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def describe(rel, st):
    return {
        "path": rel,
        "mode": stat.S_IMODE(st.st_mode),
        "ino": st.st_ino,
        "nlink": st.st_nlink,
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def listing(fd, row):
    try:
        return iter(sorted(os.listdir(fd), key=os.fsencode))
    except OSError as exc:
        row["error"] = "cannot list: %s" % exc.strerror
        return iter(())


def walk(root):
    # Through directory descriptors, never whole paths: a served path may be up to 4095 bytes
    # long, too long once the temp folder is in front of it.
    top = os.open(root, DIRECTORY)
    row = describe(".", os.fstat(top))
    row["type"] = "d"
    stack = [(".", top, listing(top, row))]
    yield row
    while stack:
        rel, fd, names = stack[-1]
        name = next(names, None)
        if name is None:
            os.close(fd)
            stack.pop()
            continue
        path = name if rel == "." else rel + "/" + name
        try:
            st = os.lstat(name, dir_fd=fd)
        except OSError as exc:
            yield {"path": path, "type": "?", "mode": 0, "error": "cannot stat: %s" % exc.strerror}
            continue
        row = describe(path, st)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            row["type"] = "d"
            try:
                child = os.open(name, DIRECTORY, dir_fd=fd)
            except OSError as exc:
                row["error"] = "cannot open: %s" % exc.strerror
            else:
                stack.append((path, child, listing(child, row)))
        elif stat.S_ISREG(mode):
            row.update(type="f", size=st.st_size)
            try:
                row["sha256"] = sha256(name, fd)
            except OSError as exc:
                row["error"] = "cannot read: %s" % exc.strerror
        elif stat.S_ISLNK(mode):
            row.update(type="l", link=os.readlink(name, dir_fd=fd))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            row.update(type="c" if stat.S_ISCHR(mode) else "b")
            row.update(devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev))
        elif stat.S_ISFIFO(mode):
            row["type"] = "p"
        else:
            row["type"] = "s" if stat.S_ISSOCK(mode) else "?"
        yield row


def more_descriptors():
    # A deep tree keeps one descriptor open per level.
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, OSError, ValueError):
        pass


def main():
    tmp, dest = sys.argv[1], sys.argv[2]
    served, failed = decide(tmp, dest)
    problem, tool, err = failed or ("", "", "")
    out = [ascii({"served": served, "problem": problem, "tool": tool, "stderr": err})]
    if not problem:
        more_descriptors()
        out.extend(ascii(row) for row in walk(dest))
    sys.stdout.write("\n".join(out) + "\n")


main()
"""


# --- Comparing with the portal's manifest --------------------------------------------------


def compare_with_manifest(
    unpacked: Unpacked, entries: Iterable, *, unreadable_ok: bool = False
) -> list[str]:
    """Differences between what the server serves and the portal's manifest rows
    (`releases.manifest.ManifestEntry`, as `unpack.unpack_archive` records them, or rows in
    archive order); empty when they agree. An 'h' row stands for its `link`'s node, file or
    symlink alike.

    `unreadable_ok`: a file whose mode has no owner-read bit cannot be read back by the
    unprivileged server user (fakeroot keeps the real mode), so its content cannot be
    compared; with this flag that alone is not a difference (type, mode and size still are).
    The portal lists such files on the build page (`unreadable`)."""
    return compare(unpacked, entries, unreadable_ok=unreadable_ok).differences


def compare(unpacked: Unpacked, entries: Iterable, *, unreadable_ok: bool = False) -> Comparison:
    if not unpacked.ok:
        return Comparison([f"the school server did not unpack it: {unpacked.problem}"], [])
    expected = _expected_tree(list(entries), unpacked.served)
    tree = unpacked.tree
    differences: list[str] = []
    for path in sorted(expected, key=os.fsencode):
        _node, row = expected[path]
        got = tree.get(path)
        if got is None:
            differences.append(f"{path}: missing (manifest has type {row.type!r})")
            continue
        differences.extend(
            f"{path}: {d}" for d in _entry_differences(row, got, unreadable_ok=unreadable_ok)
        )
    parents = {"."}
    for path in expected:
        parts = path.split("/")
        parents.update("/".join(parts[:n]) for n in range(1, len(parts)))
    implicit = []
    for path in sorted(set(tree) - set(expected), key=os.fsencode):
        if tree[path].type == "d" and path in parents:
            implicit.append(path)
        else:
            differences.append(f"{path}: served but not in the manifest (type {tree[path].type!r})")
    differences.extend(_hard_link_differences(expected, tree))
    return Comparison(differences, implicit)


def _expected_tree(entries: list, served: str) -> dict[str, tuple[int, object]]:
    """Served path -> (node id, row that made the node), replaying the members in order.

    Each member makes a new node except a hard link, which names its target's current node;
    a later member with the same path replaces the earlier one (tar semantics)."""
    bound: dict[str, tuple[int, object]] = {}
    for number, row in enumerate(entries):
        if row.type == "h":
            target = bound.get(row.link)
            bound[row.path] = target if target is not None else (number, row)
        else:
            bound[row.path] = (number, row)
    prefix = served + "/" if served else ""
    tree = {}
    for path, node in bound.items():
        if served:
            if path == served:
                tree["."] = node
            elif path.startswith(prefix):
                tree[path[len(prefix) :]] = node
        elif path != "versions" and not path.startswith("versions/"):
            tree[path] = node
    return tree


def _entry_differences(row, got: Entry, *, unreadable_ok: bool = False) -> list[str]:
    want_type = row.type
    if want_type == "h":
        # A hard link whose target never existed: tar fails, so this only shows up as wrong.
        return [f"hard link to {row.link!r}, which has no earlier member"]
    if got.type != want_type:
        return [f"type {got.type!r}, manifest says {want_type!r}"]
    found = []
    want_mode = row.mode & 0o7777
    if want_type in ("f", "d") and got.mode != want_mode:
        found.append(f"mode {got.mode:04o}, manifest says {want_mode:04o}")
    if want_type == "f":
        if got.error:
            if not (unreadable_ok and not want_mode & 0o400):
                found.append(got.error)
        elif got.sha256 != row.sha256:
            found.append(f"sha256 {got.sha256[:12]}…, manifest says {row.sha256[:12]}…")
        if got.size != row.size:
            found.append(f"size {got.size}, manifest says {row.size}")
    if want_type == "l" and got.link != row.link:
        found.append(f"symlink to {got.link!r}, manifest says {row.link!r}")
    if want_type == "d" and got.error:
        found.append(got.error)
    return found


def _hard_link_differences(expected: dict, tree: dict[str, Entry]) -> list[str]:
    groups: dict[int, list[str]] = {}
    for path, (node_id, _row) in expected.items():
        if path in tree and tree[path].type not in ("d", "?"):
            groups.setdefault(node_id, []).append(path)
    found = []
    owner: dict[int, list[str]] = {}
    for paths in groups.values():
        paths.sort(key=os.fsencode)
        inodes = {tree[p].ino for p in paths}
        if len(inodes) > 1:
            found.append(f"{', '.join(paths)}: should be hard links of one file, are not")
        for ino in inodes:
            owner.setdefault(ino, []).extend(paths)
    for paths in owner.values():
        if len({expected[p][0] for p in paths}) > 1:
            found.append(f"{', '.join(sorted(paths))}: are hard links of one file, should not be")
    return found
