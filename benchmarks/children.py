"""A benchmark's measurement in a fresh process: a process trains on one Keras backend, so
each engine's figures come from a child of its own that prints them as a JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def json_from_child(command: list[str], label: str, cwd: Path) -> dict | None:
    """Run ``command`` (a benchmark script called with ``--child``) in ``cwd``; its last JSON
    line as a dict, or None after printing the end of its error output under ``label``."""
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        print(f"  {label} failed:\n{done.stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])
