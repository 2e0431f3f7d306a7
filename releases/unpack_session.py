"""One fakeroot session: unpack a build as a school server does, then read what it serves.

`releases.unpack` starts this file as `fakeroot -- python3 -I -S unpack_session.py`, so the
unpack and the walk share one faked state: owners, modes, setuid bits and device nodes are
read back exactly as the school server's rsync will serve them. Standard library only (it
runs without the portal's virtualenv on the path), no Django, nothing imported from the
portal.

1. Unpack: `DECOMPRESSOR < archive | tar -C TMP --numeric-owner -xpv -f -`, the stream
   going straight from one to the other as on the school server. This process watches tar:
   its checkpoints say how many bytes it has read (stopped at `max_unpacked_bytes`), its
   `-v` listing how many members (stopped past `max_members`). tar and the decompressor
   run with resource limits, so a hostile header ends them, not the worker.
2. Decide what is served, as `xs-unpack-xobuild` does: the first non-dot entry of
   `versions/pristine/` (exactly one is accepted), or the root when there is none.
3. Walk the tree without following a link, served tree first, each folder sorted; every
   regular file hashed once (hard links name the first path of their inode).

Reads one JSON job on stdin. Writes JSON lines on stdout: `["p", done]` (compressed bytes
read) while unpacking, `["r", path, type, mode, size, sha256, link, uid, gid]` per entry,
and last `["end", outcome]`. Names that are not UTF-8 travel as JSON surrogate escapes.
"""

import contextlib
import errno
import hashlib
import json
import os
import re
import resource
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time

# tar reads a pipe in records of 20 blocks, and says so every CHECKPOINT_RECORDS (10 MiB).
RECORD_BYTES = 20 * 512
CHECKPOINT_RECORDS = 1024
CHECKPOINT_LINE = re.compile(r"tar: checkpoint ([0-9]+)")
TOTALS_LINE = re.compile(r"Total bytes read: ([0-9]+) \(.*\)")
HASH_READ = 1 << 20
PROGRESS_EVERY = 0.5
STDERR_LIMIT = 16 * 1024
PRISTINE = "versions/pristine"
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Stop(Exception):
    """The outcome is decided before the end: a refusal code with its parameters."""

    def __init__(self, code, **params):
        super().__init__(code)
        self.code = code
        self.params = params


def emit(row):
    sys.stdout.write(json.dumps(row, separators=(",", ":")) + "\n")


# --- 1. Unpack ------------------------------------------------------------------------------


def limiter(limits):
    def apply():
        for name, value in limits.items():
            which = getattr(resource, "RLIMIT_" + name.upper())
            resource.setrlimit(which, (value, value))

    return apply


def start(argv, limits, **kwargs):
    try:
        # preexec_fn is safe here: this process runs no threads.
        return subprocess.Popen(argv, preexec_fn=limiter(limits), close_fds=True, **kwargs)
    except OSError as exc:
        raise Stop("unpack_tool_missing", tool=argv[0], error=exc.strerror or str(exc)) from None


def unpack(job):
    """Run decompressor | tar into job["tmp"], watching tar; return the counts and what each
    tool said. Raises Stop for a limit."""
    limits = job["limits"]
    # Read back once the decompressor is done; removed with the scratch folder in any case.
    err_decomp = tempfile.TemporaryFile(dir=job["work"])  # noqa: SIM115
    procs = []
    try:
        with open(job["archive"], "rb") as archive:
            procs.append(
                start(
                    job["decompressor"],
                    limits,
                    stdin=archive,
                    stdout=subprocess.PIPE,
                    stderr=err_decomp,
                )
            )
        decomp = procs[0]
        # The stream goes straight from the decompressor to tar, as on the school server;
        # tar reports how far it has read (`--checkpoint`), and `-v` lists each member.
        argv = [
            *job["tar"],
            "-C",
            job["tmp"],
            "--numeric-owner",
            "-xpv",
            f"--checkpoint={CHECKPOINT_RECORDS}",
            "--checkpoint-action=echo=checkpoint %u",
            "--totals",
            "-f",
            "-",
        ]
        procs.append(
            start(argv, limits, stdin=decomp.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
        decomp.stdout.close()  # only tar reads the stream now
        tar = procs[1]
        watch = Watch(decomp, tar, job)
        watch.run()
    except Stop:
        for proc in procs:
            # os.kill, not proc.kill(): Popen polls first and may reap the tool, which
            # leaves reap() nothing to wait for.
            if not hasattr(proc, "peak_rss"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            reap(proc)
        raise
    return {
        "decompressor": (reap(decomp), said(err_decomp)),
        "tar": (reap(tar), watch.said()),
        "unpacked": watch.unpacked,
        "members": watch.members,
    }


def reap(proc):
    """Wait for a tool once; its exit status (negative: the signal) and its peak memory."""
    if not hasattr(proc, "peak_rss"):
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.peak_rss = usage.ru_maxrss * 1024
    return proc.returncode, proc.peak_rss


def said(fh):
    fh.seek(0)
    return fh.read(STDERR_LIMIT).decode("utf-8", "replace")


class Watch:
    """Follows tar while it unpacks: the members it lists, the bytes its checkpoints and
    totals report, and what else it says; stops it at a limit or when the worker is gone.

    tar names members inside its messages with newlines escaped (`\\n`), so a member's name
    cannot forge a whole checkpoint or totals line."""

    def __init__(self, decomp, tar, job):
        self.decomp, self.tar, self.job = decomp, tar, job
        self.limit = job["max_unpacked_bytes"]
        self.max_members = job["max_members"]
        self.unpacked = 0
        self.members = 0
        self.messages = []
        self.kept = 0
        self.partial = b""
        self.fdinfo = f"/proc/{decomp.pid}/fdinfo/0"
        self.next_progress = 0.0
        self.last_state = None
        self.last_change = time.monotonic()

    def run(self):
        listing = self.tar.stdout.fileno()
        errors = self.tar.stderr.fileno()
        open_fds = {listing, errors}
        while open_fds:
            self.progress()
            readable, _, _ = select.select(list(open_fds), [], [], PROGRESS_EVERY)
            for fd in readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    open_fds.discard(fd)
                elif fd == listing:
                    self.listed(chunk)
                else:
                    self.heard(chunk)
        if self.partial:
            self.line(self.partial.decode("utf-8", "replace"))

    def listed(self, chunk):
        # `-v` prints one line per member.
        self.members += chunk.count(b"\n")
        if self.members > self.max_members:
            raise Stop("archive_too_many", limit=self.max_members)

    def heard(self, chunk):
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            self.line(line.decode("utf-8", "replace"))

    def line(self, text):
        if match := CHECKPOINT_LINE.fullmatch(text):
            self.unpacked = int(match[1]) * RECORD_BYTES
            if self.unpacked > self.limit:
                raise Stop("archive_too_big", limit=self.limit)
        elif match := TOTALS_LINE.fullmatch(text):
            self.unpacked = int(match[1])
            if self.unpacked > self.limit:
                raise Stop("archive_too_big", limit=self.limit)
        elif self.kept < STDERR_LIMIT:
            self.messages.append(text)
            self.kept += len(text) + 1

    def said(self):
        return "\n".join(self.messages)

    def progress(self):
        now = time.monotonic()
        if now < self.next_progress:
            return
        self.next_progress = now + PROGRESS_EVERY
        if not parent_alive(self.job["watch_pid"]):
            raise Stop("unpack_abandoned")
        position = None
        try:
            with open(self.fdinfo) as fh:
                for line in fh:
                    if line.startswith("pos:"):
                        position = int(line.split()[1])
                        emit(["p", position])
                        sys.stdout.flush()
                        break
        except (OSError, ValueError):
            pass
        state = (position, self.members, self.unpacked, self.kept)
        if state != self.last_state:
            self.last_state, self.last_change = state, now
        elif now - self.last_change > self.job["stall_seconds"]:
            raise Stop("archive_unpack_stalled", seconds=self.job["stall_seconds"])


def parent_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- 2. What is served ----------------------------------------------------------------------


def kind_of(path):
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    if stat.S_ISREG(mode):
        return "f"
    return "c" if stat.S_ISCHR(mode) else "b" if stat.S_ISBLK(mode) else "p"


def decide(tmp):
    """The served path relative to TMP ("" for the root), as the school server picks it.

    Stricter than the school server in three ways, each a build mistake: `versions` or
    `versions/pristine` that is not a real folder (a symlink there makes the server move
    whatever it points to), an empty `versions/pristine`, and more than one entry in it."""
    for path in ("versions", PRISTINE):
        kind = kind_of(os.path.join(tmp, path))
        if kind is not None and kind != "d":
            raise Stop("archive_versions_not_directory", path=path, kind=kind)
    pristine = os.path.join(tmp, PRISTINE)
    if kind_of(pristine) is None:
        return ""
    # `ls | sort | head -n1`: ls leaves out dot entries.
    entries = sorted(n for n in os.listdir(pristine) if not n.startswith("."))
    if not entries:
        raise Stop("archive_empty_pristine")
    if len(entries) > 1:
        raise Stop("archive_several_pristine", count=len(entries), entries=entries[:5])
    entry = entries[0]
    served = PRISTINE + "/" + entry
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in entry):
        # `ls | sort | head -n1` would split or change such a name.
        raise Stop("archive_pristine_name", entry=entry)
    kind = kind_of(os.path.join(tmp, served))
    if kind != "d":
        raise Stop("archive_served_not_directory", path=served, kind=kind)
    return served


# --- 3. The walk ----------------------------------------------------------------------------


class Walk:
    def __init__(self, job):
        self.limit = job["max_unpacked_bytes"]
        self.max_entries = job["max_members"]
        self.bytes = 0
        self.entries = 0
        self.leaders = {}  # (dev, ino) -> (first path, sha256) of inodes with several names

    def tree(self, top_fd, prefix, skip=""):
        """Rows of everything under an open folder, sorted per folder, depth first; `skip`
        (a path) is left out with what is under it."""
        stack = [(prefix, top_fd, self.names(top_fd))]
        while stack:
            rel, fd, names = stack[-1]
            name = next(names, None)
            if name is None:
                if fd != top_fd:
                    os.close(fd)
                stack.pop()
                continue
            path = name if not rel else rel + "/" + name
            if path == skip:
                continue
            st = os.lstat(name, dir_fd=fd)
            self.entries += 1
            if self.entries > self.max_entries:
                raise Stop("archive_too_many", limit=self.max_entries)
            if stat.S_ISDIR(st.st_mode):
                emit(self.row(path, "d", st))
                try:
                    child = os.open(name, DIRECTORY, dir_fd=fd)
                except PermissionError:
                    continue  # listed as unreadable from its mode; nothing below is served
                stack.append((path, child, self.names(child)))
            else:
                emit(self.entry(path, name, fd, st))

    def names(self, fd):
        try:
            return iter(sorted(os.listdir(fd)))
        except PermissionError:
            return iter(())

    def row(self, path, kind, st, size=0, sha256="", link=""):
        return ["r", path, kind, stat.S_IMODE(st.st_mode), size, sha256, link, st.st_uid, st.st_gid]

    def entry(self, path, name, fd, st):
        """The row of a non-folder. A further name of an inode already listed (a hard link,
        of a file or of a symlink: olpc-update's run farm has both) names the first one."""
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.leaders:
            leader, digest = self.leaders[key]
            # A further name of a symlink or device says so with size -1 (`manifest`).
            size = st.st_size if stat.S_ISREG(st.st_mode) else -1
            return self.row(path, "h", st, size, digest, leader)
        row = self.first_entry(path, name, fd, st)
        if st.st_nlink > 1:
            self.leaders[key] = (path, row[5])
        return row

    def first_entry(self, path, name, fd, st):
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            return self.row(path, "l", st, link=os.readlink(name, dir_fd=fd))
        if not stat.S_ISREG(mode):
            kind = "c" if stat.S_ISCHR(mode) else "b" if stat.S_ISBLK(mode) else "p"
            if stat.S_ISSOCK(mode):
                kind = "s"
            return self.row(path, kind, st)
        # Counted at the apparent size before a byte is read: a sparse file of 1 TB is 1 TB.
        self.bytes += st.st_size
        if self.bytes > self.limit:
            raise Stop("archive_too_big", limit=self.limit)
        return self.row(path, "f", st, st.st_size, sha256(name, fd))


def sha256(name, dir_fd):
    try:
        fd = os.open(name, FILE, dir_fd=dir_fd)
    except PermissionError:
        return ""  # no owner read bit: the school server's rsync cannot read it either
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(HASH_READ):
            digest.update(chunk)
    return digest.hexdigest()


def walk(job, served):
    tmp = job["tmp"]
    walker = Walk(job)
    root = os.open(tmp, DIRECTORY)
    try:
        if served:
            top = os.open(served, DIRECTORY, dir_fd=root)
            emit(walker.row(served, "d", os.fstat(top)))
            walker.tree(top, served)
            os.close(top)
        walker.tree(root, "", skip=served)
    finally:
        os.close(root)
    return walker


def contents_copy(tmp, served):
    """The sha256 of `versions/contents/<id>`, the manifest the image builder put beside
    the tree, when the archive carries one for the served id."""
    if not served or kind_of(os.path.join(tmp, "versions", "contents")) != "d":
        return ""
    path = os.path.join(tmp, "versions", "contents", served.rsplit("/", 1)[1])
    try:
        fd = os.open(path, FILE)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
    finally:
        os.close(fd)
    return sha256(path, None)


def main():
    job = json.load(sys.stdin)
    try:
        tools = unpack(job)
        outcome = {"tools": tools}
        tar_status = tools["tar"][0][0]
        decomp_status = tools["decompressor"][0][0]
        # tar met its end-of-archive blocks and stopped reading before the stream ended:
        # the decompressor dies writing the rest, which tar (and so the server) ignores.
        if tar_status != 0 or decomp_status not in (0, -signal.SIGPIPE):
            emit(["end", outcome])
            return
        served = decide(job["tmp"])
        walk(job, served)
        outcome.update(
            served=served,
            contents_sha256=contents_copy(job["tmp"], served),
        )
        emit(["end", outcome])
    except Stop as stop:
        emit(["end", {"refused": stop.code, "params": stop.params}])
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        emit(["end", {"no_space": str(exc)}])


if __name__ == "__main__":
    main()
