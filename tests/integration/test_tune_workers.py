"""Several workers, one study: worker processes share a search's trials through Optuna's
storage (SQLite here, a real PostgreSQL server where one runs), no trial is lost or run twice,
and a worker killed mid-trial leaves the study usable."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from handwriting.models import search
from handwriting.params import load_params
from tests.unit.test_tune import read_rungs, run_tune, untuned_files, write_params

# Worker processes and real trials: over 5 s each (`pytest -m "not slow"` leaves them out).
pytestmark = pytest.mark.slow

POSTGRES = os.environ.get("TEST_POSTGRES_URL")


def lower_rung_studies(url: str):
    import optuna

    storage = search.open_storage(url)
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    # The top rung is not among them: it runs in the stage's process, in memory.
    return [optuna.load_study(study_name=name, storage=storage) for name in names]


def assert_every_configuration_ran_once(study):
    """Each queued configuration has exactly one completed trial; returns the workers."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials() if "config_id" in t.user_attrs]
    complete = Counter(t.user_attrs["config_id"] for t in trials
                       if t.state == TrialState.COMPLETE)
    queued = {t.user_attrs["config_id"] for t in trials}
    assert set(complete) == queued and set(complete.values()) == {1}, complete
    return {t.user_attrs["worker"] for t in trials if t.state == TrialState.COMPLETE}


POP_WORKER = """
import sys
import optuna
from handwriting.models import search


optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="queue", storage=search.open_storage(sys.argv[1]))

def objective(trial):
    if "item" not in trial.user_attrs:  # the queue is empty
        trial.study.stop()
        raise optuna.TrialPruned()
    print(trial.user_attrs["item"], flush=True)
    return 0.0

study.optimize(objective, catch=())
"""


def test_sqlite_workers_never_pop_the_same_waiting_trial(tmp_path):
    """SQLite ignores Optuna's SELECT ... FOR UPDATE: without immediate transactions, two
    processes could both take one waiting trial (this test caught it within 200 pops)."""
    import subprocess
    import sys

    import optuna

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    study = optuna.create_study(study_name="queue", storage=search.open_storage(url))
    items = range(150)
    for item in items:
        study.enqueue_trial({}, user_attrs={"item": item})
    workers = [subprocess.Popen([sys.executable, "-c", POP_WORKER, url], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(4)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [w.returncode for w in workers] == [0] * 4, [err for _, err in outputs]
    popped = [int(line) for out, _ in outputs for line in out.split()]
    assert sorted(popped) == list(items), Counter(popped).most_common(3)


def test_two_worker_processes_share_one_study(tmp_path, tiny_split, mlflow_store):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    params_path = write_params(tmp_path, epochs=6, n_trials=6, workers=2, storage=url)
    result = search.search("lenet5", load_params(params_path), tiny_split,
                           untuned_val_accuracy=0.0, scratch=tmp_path, params_path=params_path)
    (first,) = lower_rung_studies(url)
    workers = assert_every_configuration_ran_once(first)
    assert len(first.get_trials()) >= 6 and len(result.rungs[0]["scores"]) == 6
    assert len(workers) == 2 and f":{os.getpid()}" not in " ".join(workers), workers
    assert first.user_attrs.get("finished") is True


@pytest.mark.skipif(not POSTGRES, reason="no PostgreSQL server: set TEST_POSTGRES_URL "
                                         "(.ci/run installs and starts Debian's postgresql)")
def test_a_study_runs_through_a_real_postgresql_server(tmp_path, tiny_split,
                                                       mlflow_store):
    import optuna

    storage = search.open_storage(POSTGRES)
    for summary in optuna.get_all_study_summaries(storage):  # a clean database
        optuna.delete_study(study_name=summary.study_name, storage=storage)
    params_path = write_params(tmp_path, n_trials=4, workers=2, storage=POSTGRES)
    result = search.search("lenet5", load_params(params_path), tiny_split,
                           untuned_val_accuracy=0.0, scratch=tmp_path, params_path=params_path)
    (first,) = lower_rung_studies(POSTGRES)
    assert_every_configuration_ran_once(first)
    assert len(result.rungs[0]["scores"]) == 4 and result.trials["fail"] == 0


def test_a_worker_killed_mid_trial_leaves_the_study_usable_and_the_stage_finishes(
        tmp_path, tiny_split, mlflow_store):
    import threading

    from optuna.trial import TrialState

    url = f"sqlite:///{tmp_path / 'study.db'}"
    # Long enough lowest-rung trials (20 epochs) to be killed in one.
    params_path = write_params(tmp_path, epochs=40, n_trials=3, workers=2, storage=url)
    untuned = untuned_files(tmp_path, params_path, tiny_split)
    outcome: dict = {}

    def stage() -> None:
        try:
            outcome["summary"], outcome["files"] = run_tune(tmp_path, params_path, tiny_split,
                                                            untuned)
        except BaseException as error:  # noqa: BLE001  (reported by the test below)
            outcome["error"] = error

    thread = threading.Thread(target=stage)
    thread.start()
    victim = None
    deadline = time.monotonic() + 180
    while not (tmp_path / "study.db").is_file():  # the stage makes it: no racing it
        assert time.monotonic() < deadline and thread.is_alive(), outcome or "no study"
        time.sleep(0.2)
    time.sleep(2)  # the stage's tables and study first
    while victim is None:
        assert time.monotonic() < deadline and thread.is_alive(), outcome or "no trial started"
        try:
            (study,) = lower_rung_studies(url)
        except (ValueError, search.SearchError):  # its tables or study are not there yet
            time.sleep(0.2)
            continue
        running = [t.user_attrs.get("worker", "") for t in study.get_trials()
                   if t.state == TrialState.RUNNING]
        pids = [int(w.rsplit(":", 1)[1]) for w in running if w]
        victim = next((pid for pid in pids if pid != os.getpid()), None)
        time.sleep(0.1)
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    summary, files = outcome["summary"], outcome["files"]
    assert all(path.is_file() for path in files)  # the stage wrote every output
    (study,) = lower_rung_studies(url)
    states = Counter(t.state for t in study.get_trials())
    assert states[TrialState.FAIL] == 1 and states[TrialState.RUNNING] == 0
    assert_every_configuration_ran_once(study)
    (failed,) = study.get_trials(states=(TrialState.FAIL,))
    assert failed.user_attrs["worker"].endswith(f":{victim}")
    assert sorted(read_rungs(files[-1])[0]) == ["config-1", "config-2", "untuned"]
