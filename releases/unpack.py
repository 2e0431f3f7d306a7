"""Validate a build archive by unpacking it with GNU tar, exactly as a school server does.

A school server (`xs-unpack-xobuild`) unpacks a build in fakeroot with
`tar --numeric-owner -xp`, one decompressor per extension, into a fresh folder, and serves the
first entry of `versions/pristine/`. Any error aborts its whole refresh. So the parser of
record here is that same tar: the portal never reads a tar header itself. What tar refuses,
the portal refuses with tar's own words; what tar leaves on disk is what the manifest, the
security summary and the served id describe, read back in the same fakeroot session
(`unpack_session`, which runs under fakeroot) so owners and modes are the ones rsync serves.

`unpack_archive` is I/O only (no ORM, no settings: limits and programs are arguments). The
scratch folder lives under `scratch_dir`, holds at most one unpacked build, and is removed in
every outcome; `sweep_scratch` removes what a killed worker left.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from releases import extraction
from releases.manifest import ManifestEntry, ManifestWriter
from releases.reasons import Refused

SESSION = Path(__file__).with_name("unpack_session.py")
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SCRATCH_PREFIX = "validate-"
# Free space asked of the scratch disk before starting, per byte of compressed archive (the
# bench build unpacks to 2.6 times its size); capped by the unpacked-size limit.
SCRATCH_FACTOR = 4
# Limits for tar and the decompressor. A real unpack needs a few MB: a 1 GiB long name or
# a member-count bomb ends them ("memory exhausted"), never the worker.
TOOL_ADDRESS_SPACE = 512 * 1024 * 1024
TOOL_OPEN_FILES = 256
MAX_THREADS = 8
# A session asked to stop gets this long to stop its fakeroot daemon itself.
STOP_GRACE_SECONDS = 2
# tar that reads nothing, lists nothing and is not done for this long is stuck (a device
# node unpacked over a FIFO blocks it for ever under fakeroot, as on a school server).
STALL_SECONDS = 120
TOOL_CPU_SECONDS = 2 * 3600
# What GNU tar or a decompressor may print on a clean unpack without it changing anything the
# school server serves, as whole lines: a member's name is part of each line and is the
# archive's to choose, so a pattern matched anywhere would let a name forge it. Anything
# else printed is a refusal (tar still exited 0, but it did something the builder did not
# mean, such as extracting an unknown member type as a file).
HARMLESS_WARNINGS = tuple(
    re.compile(pattern)
    for pattern in (
        # A build made on a machine whose clock was off: the school server unpacks it the same.
        r"tar: .+: implausibly old time stamp [0-9-]+ [0-9:.]+",
        r"tar: .+: time stamp [0-9-]+ [0-9:.]+ is [0-9.]+ s in the future",
        # bzip2 (the single-threaded fallback) ignores bytes after the last stream, as tar -j
        # does (but see `_bzip2_cut_header`).
        r"bzip2: \(stdin\): trailing garbage after EOF ignored",
    )
)
XZ_MAGIC = b"\xfd7zXZ\x00"
# bzip2's end-of-stream marker (48 bits, at any bit offset), then a 32-bit CRC and padding.
BZIP2_END_MAGIC = 0x177245385090
SHOWN_WARNINGS = 10
# Lines GNU tar adds after an error, which say nothing of their own.
_TAR_NOISE = ("Exiting with failure status", "Error is not recoverable")


class ScratchUnavailable(OSError):
    """The scratch disk or a tool is missing or full: not the build's fault, so the
    validation is handed back and tried again (`services.build_validate`)."""


@dataclass(frozen=True)
class Decompressor:
    label: str
    argv: tuple[str, ...]


@dataclass
class ArchiveScan:
    members: int
    unpacked_size: int
    pristine_id: str
    manifest: bytes
    # What the served tree carries that matters for security (see `extraction.Summary`).
    summary: dict
    # sha256 of `versions/contents/<id>` when the archive carries it, else "".
    contents_copy_sha256: str = ""
    # Peak resident memory of each program of the unpack, in bytes.
    peak_rss: dict = field(default_factory=dict)


def decompressor(compression: str, *, parallel: bool = True) -> Decompressor:
    """The program that decompresses like the school server's, in parallel where one is
    installed and its output is byte-identical (lbzip2, then pbzip2, for bzip2; xz's own
    threads for xz). Legacy .lzma has no threaded decoder."""
    # More threads than MAX_THREADS gain little on one stream, and each costs memory under
    # TOOL_ADDRESS_SPACE (lbzip2 -n 16 cannot allocate in 512 MiB of address space).
    threads = str(max(1, min(MAX_THREADS, len(os.sched_getaffinity(0)))))
    if compression == "bz2":
        if parallel and _which("lbzip2"):
            return Decompressor("lbzip2", ("lbzip2", "-dc", "-n", threads))
        if parallel and _which("pbzip2"):
            return Decompressor("pbzip2", ("pbzip2", "-dc", "-p" + threads))
        return Decompressor("bzip2", ("bzip2", "-dc"))
    if compression == "xz":
        # Multi-threaded decoding only within a memory budget; beyond it xz decodes on one.
        extra = ("-T0", "--memlimit-mt=128MiB") if parallel else ()
        return Decompressor("xz", ("xz", "-dc", *extra))
    if compression == "lzma":
        # The school server runs `lzma -cd`: legacy .lzma only, xz data fails.
        return Decompressor("lzma", ("lzma", "-dc"))
    raise ValueError(f"unknown compression {compression!r}")


def _which(program: str) -> str | None:
    return shutil.which(program, path=SEARCH_PATH)


def unpack_archive(
    path,
    compression: str,
    *,
    scratch_dir,
    max_unpacked_bytes: int,
    max_members: int,
    tar: str = "tar",
    allow_device_nodes: bool = False,
    parallel: bool = True,
    stall_seconds: float = STALL_SECONDS,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveScan:
    """Unpack `path` as a school server would and describe what it serves; raise Refused
    with GNU tar's (or the decompressor's) own words on the first problem, or
    ScratchUnavailable when this host cannot do the work now.

    1. Check the scratch disk's free space; make a private folder in it, locked while used.
    2. Run `unpack_session` under fakeroot: decompressor | tar, watched, then the
       pristine decision and a walk of the tree, in one fakeroot session.
    3. Turn tar's exit status and messages into a refusal, or the rows into the manifest
       and the security summary.
    4. Remove the folder, whatever happened.
    """
    path = Path(path)
    tool = decompressor(compression, parallel=parallel)
    scratch_dir = Path(scratch_dir)
    for program in ("fakeroot", tar, tool.argv[0]):
        if not (_which(program) if "/" not in program else os.access(program, os.X_OK)):
            raise ScratchUnavailable(
                errno.ENOENT, f"{program} is not installed on this host (see docs/deploy.md)"
            )
    if compression == "bz2" and _bzip2_cut_header(path):
        raise Refused(
            "archive_decompress_failed",
            tool="bzip2",
            status="2",
            line="bzip2: Compressed file ends unexpectedly;",
        )
    total = path.stat().st_size
    _check_free_space(scratch_dir, min(max_unpacked_bytes, SCRATCH_FACTOR * total))
    with _scratch(scratch_dir) as work:
        tmp = work / "tree"
        tmp.mkdir(mode=0o700)
        job = {
            "archive": str(path),
            "work": str(work),
            "tmp": str(tmp),
            "decompressor": list(tool.argv),
            "tar": [tar],
            "max_unpacked_bytes": max_unpacked_bytes,
            "max_members": max_members,
            "watch_pid": os.getpid(),
            "stall_seconds": stall_seconds,
            "limits": {
                "as": TOOL_ADDRESS_SPACE,
                "nofile": TOOL_OPEN_FILES,
                "cpu": TOOL_CPU_SECONDS,
                # One file larger than the whole limit ends tar (SIGXFSZ), sparse or not.
                "fsize": max_unpacked_bytes,
            },
        }
        return _Session(job, tool, path, progress, allow_device_nodes).run(work)


def _check_free_space(scratch_dir: Path, needed: int):
    scratch_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(scratch_dir).free
    if free < needed:
        raise ScratchUnavailable(
            errno.ENOSPC,
            f"the validation scratch folder {scratch_dir} has {free} bytes free; "
            f"this build needs about {needed} (VALIDATION_SCRATCH_DIR)",
        )


@contextlib.contextmanager
def _scratch(scratch_dir: Path):
    work = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=scratch_dir))
    lock = open(work.with_suffix(".lock"), "w")  # noqa: SIM115 - held for the whole unpack
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield work
    finally:
        remove_tree(work)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock.name)
        lock.close()


def sweep_scratch(scratch_dir, *, older_than: float) -> int:
    """Remove scratch folders that no running validation holds (a killed worker's), if they
    are older than `older_than` seconds. Returns how many were removed."""
    scratch_dir = Path(scratch_dir)
    if not scratch_dir.is_dir():
        return 0
    removed = 0
    now = time.time()
    for work in scratch_dir.glob(SCRATCH_PREFIX + "*"):
        if work.suffix == ".lock" or not work.is_dir():
            continue
        try:
            if now - work.lstat().st_mtime < older_than:
                continue
        except FileNotFoundError:
            continue
        lock_path = work.with_suffix(".lock")
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a validation is still working in it
            remove_tree(work)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
        removed += 1
    return removed


def remove_tree(path: Path):
    """Remove an unpacked tree whatever it holds. `rm -rf` walks it in constant memory
    (shutil.rmtree lists a whole folder at once: 67 MB for 200,000 files); an unprivileged
    owner first gives back the bits tar took away (a folder of mode 0000)."""
    if not path.exists():
        return
    command = ["rm", "-rf", "--one-file-system", "--", str(path)]
    if subprocess.run(command, capture_output=True, check=False).returncode == 0:
        return
    subprocess.run(["chmod", "-R", "u+rwx", "--", str(path)], capture_output=True, check=False)
    subprocess.run(command, capture_output=True, check=True)


class _Session:
    def __init__(self, job, tool, path, progress, allow_device_nodes):
        self.job = job
        self.tool = tool
        self.path = path
        self.total = path.stat().st_size
        self.progress = progress
        self.allow_device_nodes = allow_device_nodes

    def run(self, work: Path) -> ArchiveScan:
        env = {
            "PATH": SEARCH_PATH,
            "LC_ALL": "C",
            "HOME": str(work),
            "TMPDIR": str(work),
        }
        argv = [_which("fakeroot"), "--", sys.executable, "-I", "-S", str(SESSION)]
        with (
            tempfile.TemporaryFile(dir=work) as errors,
            subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=env,
                cwd=work,
                start_new_session=True,
                # The school server's: folders tar makes for members the archive does not
                # list get 0755 from it. The scratch folder itself is private (0700).
                umask=0o022,
            ) as proc,
        ):
            try:
                proc.stdin.write(json.dumps(self.job).encode())
                proc.stdin.close()
                return self._read(proc, errors)
            finally:
                _stop_session(proc, work)

    def _read(self, proc, errors) -> ArchiveScan:
        summary = extraction.Summary()
        manifest = ManifestWriter()
        end = None
        for line in proc.stdout:
            row = json.loads(line)
            kind = row[0]
            if kind == "p":
                if self.progress is not None:
                    self.progress(min(row[1], self.total), self.total)
            elif kind == "r":
                entry = ManifestEntry(*row[1:])
                if entry.type in extraction.DEVICES and not self.allow_device_nodes:
                    raise Refused(
                        "archive_device_node", path=extraction.shown(entry.path), kind=entry.type
                    )
                summary.add(entry)
                manifest.add(entry)
            elif kind == "end":
                end = row[1]
        if end is None:
            proc.wait()
            errors.seek(0)
            said = errors.read(4096).decode("utf-8", "replace").strip()
            raise RuntimeError(f"the unpack session ended without an outcome: {said}")
        return self._outcome(end, summary, manifest)

    def _outcome(self, end: dict, summary, manifest) -> ArchiveScan:
        if "no_space" in end:
            raise ScratchUnavailable(errno.ENOSPC, end["no_space"])
        if end.get("refused") == "unpack_tool_missing":
            raise ScratchUnavailable(errno.ENOENT, f"cannot run {end['params']['tool']}")
        if "refused" in end:
            params = {k: extraction.shown(v) for k, v in end["params"].items()}
            raise Refused(end["refused"], **params)
        tools = end["tools"]
        (tar_status, tar_rss), tar_said = tools["tar"]
        (tool_status, tool_rss), tool_said = tools["decompressor"]
        peak_rss = {"tar": tar_rss, self.tool.label: tool_rss}
        # A decompressor killed by SIGPIPE only shows that tar stopped reading: at its
        # end-of-archive blocks (fine, as on the school server), or because it failed.
        tool_failed = tool_status not in (0, -signal.SIGPIPE)
        if tar_status != 0 or tool_failed:
            raise self._failure(tar_status, tar_said, tool_status if tool_failed else 0, tool_said)
        said = [line for text in (tar_said, tool_said) for line in text.splitlines()]
        said = [line for line in said if line.strip()]
        harmful = [line for line in said if not _harmless(line)]
        if harmful:
            raise Refused("archive_tar_warning", line=extraction.shown(harmful[0], 300))
        if tools["members"] == 0:
            raise Refused("archive_empty")
        served = end["served"]
        notes = summary.finish(served)
        if said:
            notes["tar_warnings"] = [extraction.shown(line, 300) for line in said[:SHOWN_WARNINGS]]
        return ArchiveScan(
            members=tools["members"],
            unpacked_size=tools["unpacked"],
            pristine_id=extraction.shown(served.rsplit("/", 1)[1]) if served else "",
            manifest=manifest.finish(),
            summary=notes,
            contents_copy_sha256=end["contents_sha256"],
            peak_rss=peak_rss,
        )

    def _failure(self, tar_status: int, tar_said: str, tool_status: int, tool_said: str):
        """The refusal for a failed unpack, quoting the program that failed first: when the
        decompressor fails, tar only sees a cut-off stream."""
        if tool_status and self.tool.label == "lzma":
            with open(self.path, "rb") as fh:
                if fh.read(len(XZ_MAGIC)) == XZ_MAGIC:
                    return Refused("archive_lzma_is_xz")
        if tool_status:
            return Refused(
                "archive_decompress_failed",
                tool=self.tool.label,
                status=_status(tool_status),
                line=_first_line(tool_said),
            )
        if tar_status == -signal.SIGXFSZ:
            # One file past the whole unpacked-size limit (RLIMIT_FSIZE), sparse or not.
            return Refused("archive_too_big", limit=self.job["max_unpacked_bytes"])
        said = _first_line(tar_said)
        if any(text in tar_said for text in ("No space left on device", "Disk quota exceeded")):
            return ScratchUnavailable(errno.ENOSPC, f"tar: {said}")
        return Refused("archive_tar_failed", status=_status(tar_status), line=said)


def _harmless(line: str) -> bool:
    return any(pattern.fullmatch(line) for pattern in HARMLESS_WARNINGS)


def _stop_session(proc: subprocess.Popen, work: Path):
    """End a session still running (a refusal met while reading its rows, or an error):
    SIGINT first, on which fakeroot's own trap stops its daemon, then SIGKILL; then any
    program still working in the scratch folder (faked runs in a session of its own)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for pid in _working_in(work):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _working_in(folder: Path) -> list[int]:
    inside = str(folder)
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                cwd = os.readlink(f"/proc/{name}/cwd")
                if cwd == inside or cwd.startswith(inside + "/"):
                    found.append(int(name))
    return found


def _first_line(text: str) -> str:
    """The line that says why a program failed: not a harmless warning printed before the
    error, nor the summary tar adds after it."""
    lines = [line for line in text.splitlines() if line.strip()]
    useful = [
        line
        for line in lines
        if not _harmless(line) and not any(noise in line for noise in _TAR_NOISE)
    ]
    return extraction.shown((useful or lines or ["(no message)"])[0], 300)


def _bzip2_cut_header(path: Path) -> bool:
    """Whether a .tar.bz2 ends with "B", "BZ" or "BZh" right after a complete stream.

    bzip2, which the school server's `tar -j` runs, takes such bytes for a cut-off next
    stream and fails ("Compressed file ends unexpectedly"); lbzip2 ignores them. Any other
    bytes after the last stream both ignore (bzip2 with a warning)."""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 16))
        tail = fh.read()
    for cut in (b"BZh", b"BZ", b"B"):
        if tail.endswith(cut) and _ends_a_bzip2_stream(tail[: -len(cut)]):
            return True
    return False


def _ends_a_bzip2_stream(data: bytes) -> bool:
    if len(data) < 11:
        return False
    bits = int.from_bytes(data[-11:], "big")
    # The marker, the CRC (32 bits) and 0 to 7 bits of padding end the stream.
    return any((bits >> (32 + pad)) & (2**48 - 1) == BZIP2_END_MAGIC for pad in range(8))


def _status(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-status).name
        return f"signal {-status}"
    return str(status)
