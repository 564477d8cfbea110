"""The Optuna side of a search: the storage, one study per rung, its queued
configurations and their scores."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from handwriting.models.search.schedule import Rung
from handwriting.models.search.settings import SearchError, Space, in_space
from handwriting.params import Tune

HEARTBEAT_SECONDS = 5  # a worker's trial beats this often; 3 missed beats mark it failed


def open_storage(url: str | None):
    """An Optuna storage: in memory for ``None``, else an RDB storage with a heartbeat (a trial
    whose worker stops beating is failed and queued once more)."""
    import optuna

    if url is None:
        return optuna.storages.InMemoryStorage()
    sqlite = url.startswith("sqlite")
    # pysqlite in autocommit mode, so that _immediate_transactions decides how each begins
    engine = {"connect_args": {"timeout": 60, "isolation_level": None}} if sqlite else {}
    with warnings.catch_warnings():  # "experimental" (since Optuna 2.8): Optuna's recovery
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=3 * HEARTBEAT_SECONDS, heartbeat_stale_trial_callback=retry)
    except Exception as error:  # SQLAlchemy/driver errors: name the setting and the fix
        detail = " ".join(str(error).split())  # the driver's message on one line
        raise SearchError(f"cannot open the Optuna storage tune.storage={url!r} "
                          f"({type(error).__name__}: {detail}); check the URL and that the "
                          "database server is running (PostgreSQL also needs psycopg: "
                          "pip install -e '.[postgres]')") from None
    if sqlite:
        _immediate_transactions(storage.engine)
    return storage


def _immediate_transactions(engine) -> None:
    """Begin every transaction on ``engine`` (SQLite) with ``BEGIN IMMEDIATE``.

    Optuna pops a waiting trial by reading its state and then setting it to running, inside one
    transaction that PostgreSQL and MySQL lock with ``SELECT ... FOR UPDATE``. SQLite ignores
    that clause and starts its write lock only at the update, so two worker processes could both
    read "waiting" and both run the trial (then one fails with "Cannot tell a COMPLETE trial").
    An immediate transaction takes the write lock at its start, which makes the pop atomic; the
    other workers wait (up to the 60 s timeout) for the lock, which each holds for milliseconds.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "begin")
    def begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def study_name(arch: str, key: str, rung: Rung) -> str:
    """The name of the study of one rung of one search."""
    return f"{arch}-{key}-rung{rung.index}"


def queue(study, configurations: dict[int, dict[str, Any] | None], space: Space) -> None:
    """Queue each configuration not yet in ``study`` (done, waiting or running) as a waiting
    trial carrying its id (a persistent study picks up where it stopped)."""
    from optuna.trial import TrialState

    present = {t.user_attrs.get("config_id") for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING))}
    for cid, config in configurations.items():
        if cid in present:
            continue
        attrs: dict[str, Any] = {"config_id": cid}
        fixed = {}
        if config is not None:
            attrs["config"] = config
            fixed = {k: v for k, v in config.items() if in_space(v, space[k])}
        study.enqueue_trial(fixed, user_attrs=attrs, skip_if_exists=False)


def rung_scores(study) -> dict[int, float]:
    """Each configuration's score in a rung study (its completed trial)."""
    from optuna.trial import TrialState

    return {t.user_attrs["config_id"]: float(t.value)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "config_id" in t.user_attrs}


def rung_configurations(study) -> dict[int, dict[str, Any]]:
    """Each configuration of a rung study, by id (TPE's are known once drawn)."""
    return {t.user_attrs["config_id"]: t.user_attrs["config"]
            for t in study.get_trials(deepcopy=False)
            if "config_id" in t.user_attrs and "config" in t.user_attrs}


def pending(study) -> tuple[int, int]:
    """(waiting, running) trials of a study."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return states.count(TrialState.WAITING), states.count(TrialState.RUNNING)



@contextmanager
def search_storage(settings: Tune) -> Iterator[str | None]:
    """The storage URL of one search: ``tune.storage``, else a temporary SQLite file when
    several workers share it (removed afterwards), else ``None`` (in memory)."""
    if settings.storage is not None or settings.workers == 1:
        yield settings.storage
        return
    with tempfile.TemporaryDirectory(prefix="tune-") as folder:
        yield f"sqlite:///{Path(folder) / 'study.db'}"



def fail_stale(study) -> None:
    import optuna

    with warnings.catch_warnings():  # "experimental" (since Optuna 2.9): its own recovery
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)

