"""Stage crossdata: a fingerprint of every external dataset in ``evaluate.crossdata``, so that
evaluate reruns when one of them changes, appears or goes away.

The folders cannot be evaluate's dependencies themselves: the list is a param (DVC's deps
cannot expand a list), and a folder that is absent (a fresh clone without the EMNIST sample) is
skipped by evaluate, where a missing dependency would stop ``dvc repro``. So this stage runs on
every ``dvc repro`` (``always_changed`` in dvc.yaml; hashing the 7,800 EMNIST files takes well
under a second) and writes, per folder as params.yaml names it, whether it exists, its number of
files and the MD5 of their paths and bytes (:func:`handwriting.evaluation.crossdata.fingerprint`).
The file is one of evaluate's dependencies: when it comes out the same, evaluate stays up to
date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from handwriting import tracking
from handwriting.datasets import write_json
from handwriting.evaluation.crossdata import fingerprint
from handwriting.params import ParamsError, load_params


def run(params_path: Path, out_path: Path) -> dict[str, dict]:
    """Fingerprint every folder of ``evaluate.crossdata`` (relative ones from the user's
    repository, as evaluate reads them) into ``out_path``; returns what it wrote."""
    params = load_params(params_path)
    params.require("evaluate")
    folders = params.evaluate.crossdata
    written = {folder: fingerprint(tracking.resolve(folder)) for folder in folders}
    write_json(out_path, written)
    for folder, entry in written.items():
        state = f"{entry['files']} files" if entry["present"] else "absent (evaluate skips it)"
        print(f"crossdata: {folder}: {state}", flush=True)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (dvc.yaml passes every path)."""
    parser = argparse.ArgumentParser(prog="python -m handwriting.stages.crossdata",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True,
                        help="JSON to write: each folder's fingerprint")
    args = parser.parse_args(argv)
    try:
        run(args.params, args.out)
    except ParamsError as error:
        raise SystemExit(f"crossdata: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
