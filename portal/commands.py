"""Running the external commands the settings name (contents hash, oatslite restart and
health check): argv only, never a shell, with a timeout that kills the whole process group."""

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass

OUTPUT_LIMIT = 4000


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    status: int | None  # None: it could not start, or it timed out
    stdout: str
    stderr: str
    problem: str = ""  # why there is no status
    # The output as it came, for a command whose output is data (a USB kit's signature).
    stdout_bytes: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == 0

    def summary(self) -> dict:
        """What deployments and audit rows keep: bounded, JSON-ready."""
        return {
            "argv": self.argv,
            "status": self.status,
            "problem": self.problem,
            "stdout": self.stdout[-OUTPUT_LIMIT:],
            "stderr": self.stderr[-OUTPUT_LIMIT:],
        }


def run(argv: list[str], *, timeout: float) -> CommandResult:
    try:
        # Its own process group, so a timeout also kills whatever the command started and
        # nothing keeps the output pipes open.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return CommandResult(argv, None, "", "", f"{argv[0]}: {exc.strerror or exc}")
    with proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            return CommandResult(
                argv,
                None,
                stdout.decode("utf-8", "replace"),
                stderr.decode("utf-8", "replace"),
                f"no answer after {timeout:g} seconds",
            )
    return CommandResult(
        argv,
        proc.returncode,
        stdout.decode("utf-8", "replace"),
        stderr.decode("utf-8", "replace"),
        stdout_bytes=stdout,
    )
