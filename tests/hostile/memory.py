"""Peak memory of the code a worker runs, measured in a fresh process of its own.

The child sets Django up as a worker or gunicorn would (so its baseline is theirs), then runs
each call in turn; before each it resets the kernel's peak-RSS mark (writing 5 to
/proc/self/clear_refs), so every call gets its own peak (VmHWM) in one process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import importlib, json, sys
import django
django.setup()
from releases.reasons import Refused

def peak():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

results = []
for target, args, kwargs in json.load(sys.stdin):
    module, name = target.split(":")
    function = getattr(importlib.import_module(module), name)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    try:
        function(*args, **kwargs)
        outcome = "ok"
    except Refused as rejection:
        outcome = rejection.code
    results.append([outcome, peak()])
json.dump(results, sys.stdout)
"""


def peak_rss(calls: list[tuple[str, list, dict]], data_dir: Path) -> list[tuple[str, int]]:
    """Run each `("module:function", args, kwargs)`; return (outcome, peak bytes) for each."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="portal.settings", PORTAL_DATA_DIR=str(data_dir))
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [tuple(row) for row in json.loads(result.stdout)]
