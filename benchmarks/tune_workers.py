"""Tuning workers and trials at once: the same search with ``tune.workers`` 1 and 2 (issue
14's "not slower"), and with the stage's process training 1 or 2 trials at a time
(``HANDWRITING_TRIALS_AT_ONCE``).

Runs the ``tune@<arch>`` stage's search on the pipeline's split (run ``dvc repro train@<arch>``
first: the search starts from the untuned model's summary) once per worker count and number of
trials at once, each time with a fresh study (in memory for one worker, as the stage runs it;
else a temporary SQLite file) and a temporary MLflow store, and
prints the wall seconds of every rung and whether all found the same winner with the same
scores:

    python benchmarks/tune_workers.py --arch lenet5
    python benchmarks/tune_workers.py --arch gru --workers 1 2 --json tune_workers.jsonl
    python benchmarks/tune_workers.py --arch gru --workers 1 --at-once 1 2 --rounds 2

Only the rungs below the top are shared out to workers; the top rung runs in the stage's
process either way (its challengers trained at once there too). With ``--rounds 2`` the second
round runs the settings in the reverse order, so that neither always goes first. Run it on an
idle machine: the figures are wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

from handwriting.models.search import search
from handwriting.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--at-once", type=int, nargs="+", default=[1],
                        help="trials the stage's process trains at a time (default: 1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every setting, alternating the order (default: 1)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--split", type=Path, default=ROOT / "data" / "split")
    parser.add_argument("--json", type=Path, help="append one JSON line per run here")
    args = parser.parse_args(argv)
    summary_path = ROOT / "metrics" / "train" / f"{args.arch}-untuned.json"
    if not summary_path.is_file() or not (args.split / "train").is_dir():
        raise SystemExit(f"{summary_path} or {args.split} is missing; run "
                         f"`dvc repro train@{args.arch}` first")
    untuned = json.loads(summary_path.read_text())["val_accuracy"]
    settings = [(workers, at_once) for workers in args.workers for at_once in args.at_once]
    order = [setting for round_ in range(args.rounds)
             for setting in (settings if round_ % 2 == 0 else settings[::-1])]
    results = []
    for workers, at_once in order:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            values = yaml.safe_load(args.params.read_text())
            # one worker: in memory, as the stage runs it (trials at once need that)
            values["tune"].update(workers=workers, storage=None if workers == 1 else
                                  f"sqlite:///{folder / 'study.db'}")
            params_path = folder / "params.yaml"
            params_path.write_text(yaml.safe_dump(values))
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
            started = time.perf_counter()
            result = search(args.arch, load_params(params_path), args.split,
                            untuned_val_accuracy=untuned, scratch=folder,
                            params_path=params_path, at_once=at_once)
            seconds = time.perf_counter() - started
        lower = sum(r["wall_seconds"] for r in result.rungs if not r["top"])
        results.append(result)
        line = {"arch": args.arch, "workers": workers, "at_once": at_once,
                "seconds": round(seconds, 1), "lower_rungs_seconds": round(lower, 1),
                "rung_seconds": [r["wall_seconds"] for r in result.rungs],
                "winner": result.winner_name, "val_accuracy": result.val_accuracy,
                "trials": result.trials, "cpus": os.cpu_count()}
        print(json.dumps(line), flush=True)
        if args.json:
            with args.json.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
    def untimed(result):
        return [{k: v for k, v in rung.items() if k != "wall_seconds"} for rung in result.rungs]

    first, *others = results
    same = all(untimed(other) == untimed(first) for other in others)
    print(f"same rungs, scores and winner for every setting: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
