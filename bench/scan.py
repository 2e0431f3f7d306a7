"""Benchmark of the validation scan alone: `archive.scan_archive` against `bzip2 -t`.

Usage: `.venv/bin/python bench/scan.py [--size-mib 1100] [--reuse DIR] [--keep]
[--rounds 2] [--against OLD_ARCHIVE.py]` (see bench/README.md).

1. Generate the same build as bench/pipeline.py (or reuse a folder one of them kept).
2. For each round, with the page cache dropped before each read (as root): `bzip2 -t` of
   the build (the decompression floor), then the scan the validation task runs, in this
   process, with the default limits, then (with `--against`) the same scan by another
   version of releases/archive.py, e.g. `git show REV:releases/archive.py > /tmp/old.py`:
   a change's cost, measured in the same run on the same file.
3. Print the medians and their ratios to `bzip2 -t`, and this process's peak RSS (VmHWM,
   reset before each scan) while scanning.
"""

from __future__ import annotations

import argparse
import importlib.util
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

LIMITS = {"max_unpacked_bytes": 64 * 1024**3, "max_members": 2_000_000}


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


def load_archive_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"archive_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


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
    parser.add_argument("--against", type=Path, help="another releases/archive.py to time")
    parser.add_argument("--seed", type=int, default=801)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from releases import archive

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
            f" {build.members} members; page cache dropped: {drop_caches()}",
            flush=True,
        )
        scans = {"scan": archive}
        if args.against:
            scans["scan (--against)"] = load_archive_module(args.against)
        times: dict[str, list[float]] = {"bzip2 -t": [], **{name: [] for name in scans}}
        rss = {}
        for number in range(args.rounds):
            times["bzip2 -t"].append(
                timed(lambda: subprocess.run(["bzip2", "-t", str(build.tarball)], check=True))
            )
            for name, module in scans.items():
                reset_peak_rss()
                times[name].append(
                    timed(lambda m=module: m.scan_archive(build.tarball, "bz2", **LIMITS))
                )
                rss[name] = max(rss.get(name, 0), peak_rss_kib())
            done = ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items())
            print(f"round {number + 1}: {done}", flush=True)
        floor = statistics.median(times["bzip2 -t"])
        print(f"\n{'step':22} {'median':>9} {'/ bzip2 -t':>11}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:22} {median:8.1f}s {median / floor:11.2f}")
        for name, growth in rss.items():
            print(f"peak RSS of this process during {name}: {growth / 1024:.0f} MB")
    finally:
        if not args.keep and not args.reuse:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
