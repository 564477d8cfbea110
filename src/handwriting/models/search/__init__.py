"""The hyperparameter search of the ``tune@<arch>`` stages: successive halving over rungs of
growing budget, with Optuna studies holding the trials so that several workers can share them.

The schedule (:func:`rung_schedule`): ``tune.n_trials`` configurations start at the lowest rung;
rung ``r`` of ``R`` (``tune.rungs``) trains on a share ``s = tune.reduction ** -(R-1-r)`` of the
training split for ``sqrt(s)`` of the untuned epochs (lower rungs: whole batches, validated
after the last epoch; a frozen VGG-16 base's head trains on all of it at every rung, only its
epochs shrink), and each rung promotes the best ``1 / tune.reduction`` of its
challengers (at least one) to the next, and with them any challenger within ``tune.tie_se``
standard errors of the last one promoted (a rank inside the noise of the validation split's
size is no reason to drop a configuration). Configuration 0 is the untuned settings: it is
promoted at every rung whatever its score, without taking a challenger's place, and at the
top rung (all the training data, the untuned epochs) its result *is* the untuned model of
``train@<arch>`` (training is deterministic, so training it again would give the same
weights). The tuned model is the best top-rung model, so it is never worse than the untuned
one on validation, and at least one challenger always gets the full budget.

The space of a key is a list of choices or a range (``{low, high, log, step}``); the sampler
(``tune.sampler``) is Optuna's TPE by default (its first :data:`TPE_STARTUP` draws random, then
drawn where the finished lowest-rung trials scored well), or its random or grid sampler. The
rung scheme is the project's own rather than Optuna's pruners: the untuned settings must run
at every rung and be adopted, not retrained, at the top, and a rung's decisions wait for all
its trials (Optuna's asynchronous halving decides by finishing order, so two workers would not
give the same search twice).

Each rung is one Optuna study (``<arch>-<fingerprint>-rung<r>``) in ``tune.storage``: in memory
for one worker, or any Optuna RDB URL (a temporary SQLite file when ``tune.workers`` > 1 and no
storage is named, PostgreSQL to add workers on other machines). The configurations of a rung
are queued as waiting trials and workers take them with Optuna's atomic pop, so no trial is run
twice; a heartbeat marks the trial of a killed worker failed and queues it once more.

The package, read top to bottom: :mod:`.settings` (the ``tune`` params, the spaces, the
samplers, the lowest rung's configurations), :mod:`.schedule` (the rungs and promotion: pure),
:mod:`.studies` (the Optuna storage and one study per rung), :mod:`.trials` (one configuration
trained at one rung, with its MLflow run), :mod:`.workers` (who runs a rung's trials), and
:func:`search` here, which runs the rungs in order inside an MLflow parent run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handwriting.models.engine import use_engine
from handwriting.models.registry import has_frozen_base
from handwriting.models.search.schedule import UNTUNED, Rung, promoted, rung_schedule
from handwriting.models.search.settings import (
    TPE_STARTUP,
    SearchError,
    Space,
    fingerprint,
    first_configurations,
    in_space,
    make_sampler,
    suggest,
    tune_settings,
    untuned_configuration,
    untuned_in_space,
)
from handwriting.models.search.studies import (
    open_storage,
    queue,
    rung_configurations,
    rung_scores,
    search_storage,
    study_name,
)
from handwriting.models.search.trials import (
    TrialContext,
    best_epoch,
    chosen_settings,
    may_start_early,
    run_waiting,
    subsample,
    train_at_rung,
    whole_batches,
)
from handwriting.models.search.workers import run_rung, trials_at_once, work, worker_command
from handwriting.models.training import arch_settings
from handwriting.params import SEARCH_SETTINGS, Params, Tune

__all__ = [
    "TPE_STARTUP", "UNTUNED", "Rung", "SearchError", "SearchResult", "Space", "TrialContext",
    "arch_schedule", "best_epoch", "chosen_settings", "first_configurations", "in_space",
    "may_start_early", "open_storage", "promoted", "rung_schedule", "search", "subsample",
    "suggest", "train_at_rung", "trials_at_once", "tune_settings", "untuned_configuration",
    "untuned_in_space", "whole_batches", "work", "worker_command",
]


@dataclass(frozen=True)
class SearchResult:
    """The outcome of a search: the winning configuration at the top rung and every rung."""

    winner: int  # configuration id; UNTUNED (0) when the untuned settings won
    config: dict[str, Any]
    val_accuracy: float  # the winner's top-rung validation accuracy
    rungs: list[dict[str, Any]]  # per rung: budget, scores by configuration, promoted ids
    trials: dict[str, int]  # trials by state over every rung

    @property
    def winner_name(self) -> str:
        """``untuned-settings`` or ``config-<id>``."""
        return "untuned-settings" if self.winner == UNTUNED else f"config-{self.winner}"


def arch_schedule(settings: Tune, params: Params, arch: str) -> list[Rung]:
    """``arch``'s rungs (:func:`rung_schedule`) from its untuned epochs; a frozen VGG-16
    base's head trains on all the data at every rung."""
    return rung_schedule(settings, arch_settings(params.train, arch)[0].epochs,
                         subsample=not has_frozen_base(arch))


def search(arch: str, params: Params, split_dir: Path, *, untuned_val_accuracy: float,
           scratch: Path, params_path: Path | None = None,
           at_once: int | None = None) -> SearchResult:
    """Run the successive-halving search of ``arch`` inside an MLflow parent run.

    ``untuned_val_accuracy`` is the untuned model's: configuration 0's top-rung result. The
    top-rung trials leave their weights and history in ``scratch``. Worker processes (when
    ``tune.workers`` > 1) read ``params_path``. This process trains ``at_once`` trials at a
    time on JAX (:func:`trials_at_once`: by default one per core); the result does not depend
    on it. Raises
    :class:`SearchError` when every trial of a rung failed."""
    engine = use_engine(arch_settings(params.train, arch)[0].engine)  # before Keras's import
    at_once = trials_at_once(engine.backend, at_once)
    import mlflow
    import optuna

    from handwriting import tracking

    settings, space = tune_settings(params.tune, arch)
    context = TrialContext.load(arch, params, split_dir)
    context.scratch = scratch
    seed = params.base.seed
    untuned = untuned_configuration(params.train, arch, space)
    schedule = arch_schedule(settings, params, arch)
    key = fingerprint(settings, space, params, arch, [*context.train, *context.val])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracking.configure()
    configs = dict(enumerate(first_configurations(settings, space, untuned, seed)))
    rungs: list[dict[str, Any]] = []
    states: list[str] = []
    with search_storage(settings) as url, \
            mlflow.start_run(run_name=f"{arch}-search") as parent:
        mlflow.set_tags({**tracking.run_tags(stage=f"tune@{arch}", architecture=arch,
                                             variant="search", pretrained=False),
                         "sampler": settings.sampler})
        mlflow.log_params({**{f"tune.{k}": getattr(settings, k) for k in SEARCH_SETTINGS},
                           "tune.space": json.dumps(space, sort_keys=True),
                           "tune.schedule": json.dumps([vars(r) for r in schedule])})
        storage = open_storage(url)
        for rung in schedule:
            started = time.perf_counter()
            # The top rung runs here, in memory: its trials leave their weights in scratch.
            study = optuna.create_study(
                study_name=study_name(arch, key, rung), direction="maximize",
                storage=optuna.storages.InMemoryStorage() if rung.top else storage,
                sampler=make_sampler(settings.sampler, space, seed), load_if_exists=True)
            study.set_user_attr("rung", vars(rung))
            study.set_user_attr("mlflow_parent", parent.info.run_id)
            if rung.top:
                queue(study, {c: v for c, v in configs.items() if c != UNTUNED}, space)
                _add_untuned_result(study, untuned, space, untuned_val_accuracy, arch)
                run_waiting(study, context, at_once)
            else:
                queue(study, configs, space)
                command = None
                if url is not None and settings.workers > 1:
                    command = worker_command(arch, params_path or Path("params.yaml"),
                                             split_dir, url)
                # Threads' trials send no heartbeat, which another process sharing a stored
                # study would take for a dead worker's: at once only in memory.
                run_rung(study, context, url=url, workers=settings.workers,
                         worker_cmd=command, at_once=at_once if url is None else 1)
            scores = rung_scores(study)
            known = rung_configurations(study)
            states += [t.state.name.lower() for t in study.get_trials(deepcopy=False)
                       if "config_id" in t.user_attrs]
            if not scores:
                raise SearchError(f"all {len(configs)} trials of {arch} at rung {rung.index} "
                                  "failed (see the MLflow child runs and the messages above); "
                                  f"check tune.{arch} for settings that cannot train")
            keep = [] if rung.top else promoted(scores, settings.reduction,
                                                tie_se=settings.tie_se,
                                                n_images=len(context.val[1]))
            rungs.append({**vars(rung), "scores": {str(c): round(v, 6)
                                                   for c, v in sorted(scores.items())},
                          "promoted": keep,
                          "wall_seconds": round(time.perf_counter() - started, 1)})
            print(f"tune: {arch} rung {rung.index}: {len(scores)} configuration(s) scored in "
                  f"{rungs[-1]['wall_seconds']:.0f} s"
                  + (f"; promoted {keep}" if keep else ""), flush=True)
            configs = {cid: known[cid] for cid in keep}
        if url is not None:
            first = optuna.load_study(study_name=study_name(arch, key, schedule[0]),
                                      storage=storage)
            first.set_user_attr("finished", True)  # followers may stop
        winner = min(scores, key=lambda cid: (-scores[cid], cid))  # a tie goes to untuned
        counts = {state: states.count(state) for state in ("complete", "pruned", "fail")}
        mlflow.log_metrics({**{f"trials_{k}": v for k, v in counts.items()},
                            **{f"rung{r['index']}_wall_seconds": r["wall_seconds"]
                               for r in rungs},
                            "wall_seconds": sum(r["wall_seconds"] for r in rungs),
                            "best_val_accuracy": scores[winner],
                            "untuned_val_accuracy": untuned_val_accuracy})
        config = known[winner]
        mlflow.set_tag("winner", "untuned-settings" if winner == UNTUNED else
                       f"config-{winner}")
        mlflow.log_params({f"best.{k}": v for k, v in config.items()})
    return SearchResult(winner, config, scores[winner], rungs, counts)


def _add_untuned_result(study, untuned: dict[str, Any], space: Space,
                        val_accuracy: float, arch: str) -> None:
    """Configuration 0 at the top rung: the untuned model's validation accuracy."""
    import optuna

    if UNTUNED in rung_scores(study):
        return
    study.add_trial(optuna.trial.create_trial(
        value=val_accuracy, user_attrs={"config_id": UNTUNED, "config": untuned,
                                        "source": f"the untuned model of train@{arch}"}))
