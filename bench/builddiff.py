"""Benchmark of the build diff: two 42,000-entry manifests, as validation stores them.

Usage: `.venv/bin/python bench/builddiff.py [--entries 42000] [--rounds 3]` (see
bench/README.md).

1. Generate two manifests the way `archive._ManifestWriter` stores them (gzip of one JSON
   array per member) for trees under `versions/pristine/<id>/` with about 200 files a folder,
   symlinks and hard links: the old build, and a new one under another pristine id with a
   share of files changed in content, some in mode, some added and removed, a few setuid.
   Members are in archive order (folders and files shuffled, as tar's directory order
   leaves them), the costly case: `served_in_path_order` must sort both.
2. For each case (archive order; already sorted, as `tar --sort=name` writes; every file
   changed), `--rounds` times in a fresh process that reads the two files, resets its peak
   RSS (`/proc/self/clear_refs`) and times what `impact.build_diff` runs on two stored
   manifests: `served_in_path_order` of each and `diff_manifests(...).as_dict()`.
3. Print the median time, the peak RSS (VmHWM, and VmRSS before the diff: the interpreter
   and the two manifests) and the size of the JSON answer against the goals (under 2 s,
   under 150 MB).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from releases.builddiff import diff_manifests, path_key, served_in_path_order  # noqa: E402

TIME_GOAL = 2.0
RSS_GOAL_MB = 150
FILES_PER_FOLDER = 200


def tree(entries: int, *, seed: int, changed: float, version: int) -> list[list]:
    """[path, type, mode, size, sha256, link] rows of a tree relative to its root."""
    rng = random.Random(seed)
    rows = [[".", "d", 0o755, 0, "", ""]]
    folder = 0
    while len(rows) < entries:
        base = f"usr/lib/pkg{folder:05}"
        rows.append([base, "d", 0o755, 0, "", ""])
        for i in range(FILES_PER_FOLDER - 1):
            if len(rows) >= entries:
                break
            path = f"{base}/file{i:03}.py"
            kind = i % 50
            if kind == 48:
                rows.append([path, "l", 0o777, 0, "", f"file{i - 1:03}.py"])
                continue
            if kind == 49:
                rows.append([path, "h", 0o644, 0, "", f"{base}/file000.py"])
                continue
            size = 500 + (folder * 7919 + i * 104_729) % 60_000
            content = f"{folder}/{i}"
            mode = 0o644
            if version and rng.random() < changed:
                content += f"@{version}"
            if version and rng.random() < 0.01:
                mode = 0o755
            if version and folder == 3 and i < 2:
                mode = 0o4755
            sha = hashlib.sha256(content.encode()).hexdigest()
            rows.append([path, "f", mode, size, sha, ""])
        folder += 1
    if version:
        # Some files gone, some new (the same count, so both trees have `entries`).
        gone = set(rng.sample(range(2, len(rows)), 200))
        rows = [row for n, row in enumerate(rows) if n not in gone or row[1] == "d"]
        while len(rows) < entries:
            n = len(rows)
            rows.append([f"opt/new/file{n:05}", "f", 0o644, 4096, f"{n:064x}", ""])
    return rows


def stored(rows: list[list], pristine: str, *, shuffled: bool, seed: int) -> bytes:
    """A manifest as BuildManifest.data holds it, in archive (or sorted) order."""
    prefix = f"versions/pristine/{pristine}"
    members = [["versions", "d", 0o755, 0, "", ""], ["versions/pristine", "d", 0o755, 0, "", ""]]
    for path, type_, mode, size, sha, link in rows:
        full = prefix if path == "." else f"{prefix}/{path}"
        if type_ == "h":
            link = f"{prefix}/{link}"
        members.append([full, type_, mode, size, sha, link])
    if shuffled:
        rng = random.Random(seed)
        head, rest = members[:3], members[3:]
        rng.shuffle(rest)
        # Parents before children, as tar writes them: sort by depth only, stable.
        rest.sort(key=lambda row: row[0].count("/"))
        members = head + rest
    else:
        members.sort(key=lambda row: path_key(row[0]))
    text = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in members)
    return gzip.compress(text.encode("ascii"), compresslevel=6, mtime=0)


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5\n")
        return True
    except OSError:
        return False


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_diff(old: bytes, new: bytes) -> dict:
    return diff_manifests(
        served_in_path_order(old, "versions/pristine/py801"),
        served_in_path_order(new, "versions/pristine/py802"),
    ).as_dict()


def child(old_path: str, new_path: str) -> int:
    """One diff in a fresh process, so its peak RSS is its own: print the figures as JSON."""
    old, new = Path(old_path).read_bytes(), Path(new_path).read_bytes()
    before = rss_mb("VmRSS")
    reset_peak_rss()
    begin = time.perf_counter()
    result = run_diff(old, new)
    seconds = time.perf_counter() - begin
    changes = result["added"]["count"] + result["removed"]["count"] + result["changed"]["count"]
    figures = {
        "seconds": seconds,
        "peak_mb": rss_mb("VmHWM"),
        "before_mb": before,
        "changes": changes,
        "privileged": result["privileged"]["count"],
        "json_kib": len(json.dumps(result)) / 1024,
    }
    print(json.dumps(figures))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=42_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changed", type=float, default=0.3, help="Share of files changed.")
    parser.add_argument("--child", nargs=2, metavar=("OLD", "NEW"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)

    started = time.perf_counter()
    old_rows = tree(args.entries, seed=1, changed=0, version=0)
    new_rows = tree(args.entries, seed=2, changed=args.changed, version=1)
    all_rows = tree(args.entries, seed=3, changed=1.0, version=2)
    manifests = {
        "old": stored(old_rows, "py801", shuffled=True, seed=1),
        "new": stored(new_rows, "py802", shuffled=True, seed=2),
        "old-sorted": stored(old_rows, "py801", shuffled=False, seed=1),
        "new-sorted": stored(new_rows, "py802", shuffled=False, seed=2),
        "all": stored(all_rows, "py802", shuffled=True, seed=3),
    }
    cases = {
        "archive order": ("old", "new"),
        "sorted (tar --sort=name)": ("old-sorted", "new-sorted"),
        "every file changed": ("old", "all"),
    }
    generation = time.perf_counter() - started
    print(
        f"Generated {args.entries:,}-entry manifests in {generation:.1f} s "
        f"(gzip: {len(manifests['old']) / 1024:,.0f} KiB each); each diff runs "
        f"{args.rounds} times, each time in a fresh process."
    )
    if not reset_peak_rss():
        print("(cannot reset the peak RSS here: VmHWM includes reading the files)")
    print()
    print(
        f"  {'case':<26} {'time (median)':>14} {'peak RSS':>10} {'(before)':>9} "
        f"{'changes':>8} {'privileged':>10} {'JSON':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-builddiff-") as folder:
        for name, data in manifests.items():
            (Path(folder) / name).write_bytes(data)
        for name, (old, new) in cases.items():
            runs = [
                json.loads(
                    subprocess.run(
                        [sys.executable, __file__, "--child", f"{folder}/{old}", f"{folder}/{new}"],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                )
                for _round in range(args.rounds)
            ]
            median = statistics.median(run["seconds"] for run in runs)
            peak = max(run["peak_mb"] for run in runs)
            before = max(run["before_mb"] for run in runs)
            last = runs[-1]
            ok = median < TIME_GOAL and peak < RSS_GOAL_MB
            print(
                f"  {name:<26} {median:>12.2f} s {peak:>7.1f} MB {before:>6.1f} MB "
                f"{last['changes']:>8,} {last['privileged']:>10,} {last['json_kib']:>6.1f} KiB"
                f"  {'PASS' if ok else 'FAIL'}"
            )
    print(f"\nGoals: under {TIME_GOAL:.0f} s and under {RSS_GOAL_MB} MB peak RSS (VmHWM).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
