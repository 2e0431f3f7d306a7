"""A worker killed in the middle of a validation: its unpack stops by itself, and the sweeper
removes the tree it left. Real processes throughout: a child Python runs the validation's
unpack under fakeroot and is sent SIGKILL, as the kernel's OOM killer or `kill -9` would.
The tar it runs is a stand-in that never reads (`sleep`), so the kill always lands mid-way;
everything else is the real session."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from releases import unpack

from ..factories import compress, tar_bytes

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import sys
from releases import unpack
unpack.unpack_archive(sys.argv[1], "xz", scratch_dir=sys.argv[2], tar=sys.argv[3],
                      max_unpacked_bytes=1 << 30, max_members=1000)
"""


def processes_in(folder: Path) -> list[str]:
    """Command lines of the processes whose working folder is inside `folder`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cwd.startswith(str(folder)):
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_a_killed_worker_leaves_nothing_running_and_the_sweeper_removes_its_tree(tmp_path):
    archive = tmp_path / "py1-tree.tar.xz"
    archive.write_bytes(compress(tar_bytes({"etc/issue": os.urandom(4 << 20)}), "xz"))
    stuck_tar = tmp_path / "stuck-tar"
    stuck_tar.write_text("#!/bin/sh\nexec sleep 120\n")
    stuck_tar.chmod(0o755)
    scratch = tmp_path / "scratch"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(archive), str(scratch), str(stuck_tar)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )

    def tar_running():
        return any("sleep 120" in line for line in processes_in(scratch))

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not tar_running():
        time.sleep(0.05)
    assert tar_running(), "the unpack never began"

    child.send_signal(signal.SIGKILL)
    child.wait()

    # The session sees its worker gone within a second and stops tar and the decompressor.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and processes_in(scratch):
        time.sleep(0.1)
    assert processes_in(scratch) == []
    assert list(scratch.glob("validate-*/tree")), "nobody was left to remove the tree"
    assert unpack.sweep_scratch(scratch, older_than=3600) == 0  # too recent to judge
    assert unpack.sweep_scratch(scratch, older_than=0) == 1
    assert list(scratch.iterdir()) == []
