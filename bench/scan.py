"""Benchmark of validation's unpack alone: `unpack.unpack_archive` against `bzip2 -t`.

Usage: `.venv/bin/python bench/scan.py [--size-mib 1100] [--reuse DIR] [--keep]
[--rounds 2]` (see bench/README.md).

1. Generate the same build as bench/pipeline.py (or reuse a folder one of them kept).
2. For each round, with the page cache dropped before each read (as root): `bzip2 -t` of
   the build (the decompression floor, on one core), then the unpack the validation task
   runs (`unpack_archive`: the parallel decompressor, GNU tar under fakeroot into the
   configured scratch folder, the walk that hashes every file), with the configured limits
   and tar, in this process.
3. Print the medians and their ratios to `bzip2 -t`, this process's peak RSS (VmHWM, reset
   before each unpack) and the peak RSS of each program the unpack ran, as it reports them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pipeline  # noqa: E402  (bench/pipeline.py: the build generator)

VALIDATION = "validation"


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(step) -> float:
    drop_caches()
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def reset_peak_rss():
    Path("/proc/self/clear_refs").write_text("5\n")


def peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1100)
    parser.add_argument("--reuse", metavar="DIR", help="a folder with build.json (--keep)")
    parser.add_argument("--keep", action="store_true", help="keep the generated build")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=801)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.conf import settings

    from releases import unpack

    def validate(tarball: Path) -> unpack.ArchiveScan:
        return unpack.unpack_archive(
            tarball,
            "bz2",
            scratch_dir=settings.VALIDATION_SCRATCH_DIR,
            tar=settings.SCHOOL_SERVER_TAR,
            max_unpacked_bytes=settings.MAX_UNPACKED_BYTES,
            max_members=settings.MAX_ARCHIVE_MEMBERS,
        )

    folder = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(dir=ROOT / "bench"))
    try:
        if args.reuse:
            build = pipeline.GeneratedBuild.load(folder)
        else:
            print(f"generating a {args.size_mib} MiB build in {folder} …", flush=True)
            build = pipeline.generate_build(folder, args.size_mib << 20, args.seed)
            build.save()
        print(
            f"build: {build.size / 2**20:.0f} MiB bzip2, {build.tar_bytes / 2**20:.0f} MiB tar,"
            f" {build.members} members; page cache dropped: {drop_caches()};"
            f" decompressor: {unpack.decompressor('bz2').label};"
            f" scratch: {settings.VALIDATION_SCRATCH_DIR}",
            flush=True,
        )
        times: dict[str, list[float]] = {"bzip2 -t": [], VALIDATION: []}
        rss = 0
        programs: dict[str, int] = {}
        scans: list[unpack.ArchiveScan] = []
        for number in range(args.rounds):
            times["bzip2 -t"].append(
                timed(lambda: subprocess.run(["bzip2", "-t", str(build.tarball)], check=True))
            )
            reset_peak_rss()
            times[VALIDATION].append(timed(lambda: scans.append(validate(build.tarball))))
            rss = max(rss, peak_rss_kib())
            for program, peak in scans[-1].peak_rss.items():
                programs[program] = max(programs.get(program, 0), peak)
            done = ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items())
            print(f"round {number + 1}: {done}", flush=True)
        floor = statistics.median(times["bzip2 -t"])
        print(f"\n{'step':22} {'median':>9} {'/ bzip2 -t':>11}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:22} {median:8.1f}s {median / floor:11.2f}")
        print(f"peak RSS of this process during {VALIDATION}: {rss / 1024:.0f} MB")
        for program, peak in programs.items():
            print(f"peak RSS of {program} during {VALIDATION}: {peak / 2**20:.0f} MB")
    finally:
        if not args.keep and not args.reuse:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
