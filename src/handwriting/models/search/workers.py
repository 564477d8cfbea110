"""Who runs a rung's trials: this process, or worker processes on this and other machines
sharing the rung's study."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from handwriting.models.engine import use_engine
from handwriting.models.search.settings import SearchError, fingerprint, make_sampler, tune_settings
from handwriting.models.search.studies import fail_stale, open_storage, pending
from handwriting.models.search.trials import TrialContext, run_waiting
from handwriting.models.training import arch_settings
from handwriting.params import Params

STUCK_SECONDS = 60 * 60  # a rung whose running trials make no progress this long is an error
AT_ONCE_ENV = "HANDWRITING_TRIALS_AT_ONCE"
MAX_AT_ONCE = 4  # by default: one trial per core, up to this many


def trials_at_once(backend: str, wanted: int | None = None) -> int:
    """How many trials the stage's process trains at once, each on a thread of its own:
    ``wanted``, else ``$HANDWRITING_TRIALS_AT_ONCE`` when set, else one per core this process
    may use (at most :data:`MAX_AT_ONCE`). A small model's step leaves cores idle (Python
    between the steps, operations too small to share out), which a second trial fills; the
    results are the same whatever the number (the trials' settings and scores do not depend on
    it), so it is not a param. Always 1 on TensorFlow engines (the VGG models): their input
    pipeline (tf.data) seeds its shuffling from TensorFlow's process-wide seed, which another
    trial's seeding would change under it."""
    if wanted is None:
        value = os.environ.get(AT_ONCE_ENV, "").strip()
        if value and (not value.isdigit() or int(value) < 1):
            raise SearchError(f"{AT_ONCE_ENV} must be a whole number of at least 1, got "
                              f"{value!r}; unset it to train one trial per core at once")
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")  # Linux
                 else os.cpu_count() or 1)
        wanted = int(value) if value else min(cores, MAX_AT_ONCE)
    elif wanted < 1:
        raise SearchError(f"trials at once must be at least 1, got {wanted}")
    return wanted if backend == "jax" else 1


def worker_command(arch: str, params_path: Path, split_dir: Path, storage: str) -> list[str]:
    """The command line of one worker process on this machine. Each keeps TensorFlow's own
    thread count (all the cores), as the stage's process has: a trial then computes exactly
    what it computes with one worker (fewer threads would round differently)."""
    return [sys.executable, "-m", "handwriting.stages.tune", "--worker", "--arch", arch,
            "--params", str(params_path), "--split", str(split_dir), "--storage", storage]


def work(arch: str, params: Params, split_dir: Path, storage_url: str, *,
         follow: bool = False, poll_seconds: float = 2.0) -> int:
    """A worker: run the waiting trials of ``arch``'s lower rungs in ``storage_url`` until none
    is left (with ``follow``, until the search is finished). Returns the trials it ran."""
    use_engine(arch_settings(params.train, arch)[0].engine)  # before Keras is first imported
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url)
    context = TrialContext.load(arch, params, split_dir)
    settings, space = tune_settings(params.tune, arch)
    key = fingerprint(settings, space, params, arch, [*context.train, *context.val])
    ran = 0
    while True:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage)
                       if s.study_name.startswith(f"{arch}-{key}-rung"))
        # TPE draws differ from worker to worker (the other samplers' draws are queued).
        studies = [optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(
            settings.sampler, space, params.base.seed + os.getpid())) for name in names]
        open_ = [s for s in studies if not s.user_attrs["rung"]["top"] and pending(s)[0]]
        for study in open_:
            ran += run_waiting(study, context)
        finished = any(s.user_attrs.get("finished") for s in studies)
        if open_:
            continue
        if not follow or finished:
            return ran
        time.sleep(poll_seconds)



def run_rung(study, context: TrialContext, *, url: str | None, workers: int,
             worker_cmd: list[str] | None, at_once: int = 1) -> None:
    """Run every queued trial of a lower rung: in this process for one worker (``at_once``
    at a time), else in ``workers`` worker processes (``worker_cmd``); then finish any trial
    a killed worker left behind."""
    if workers > 1 and url is not None and worker_cmd is not None:
        processes = [subprocess.Popen(worker_cmd) for _ in range(workers)]
        for process in processes:
            process.wait()
        failed = [p.returncode for p in processes if p.returncode]
        if failed:
            print(f"tune: {len(failed)} worker(s) ended with exit status {failed}; their "
                  "trials are failed by the heartbeat and run again here", file=sys.stderr)
    last_change, seen = time.monotonic(), None
    while True:
        waiting, running = pending(study)
        if (waiting, running) != seen:
            last_change, seen = time.monotonic(), (waiting, running)
        if waiting:
            run_waiting(study, context, at_once)
        elif running:  # another machine's worker, or a killed one's trial going stale
            if time.monotonic() - last_change > STUCK_SECONDS:
                raise SearchError(f"{running} trial(s) of {study.study_name} have been running "
                                  f"for {STUCK_SECONDS // 60} minutes with no progress; is a "
                                  "worker stuck? Stop it: the heartbeat then queues its trial "
                                  "again")
            fail_stale(study)
            time.sleep(1)
        else:
            return

